// Keyrings and encrypted task fields for Python (payq/keyring.py): the
// keyring, the field seals, the rotation batch; and the encryption fields of
// TaskSpec and HandlerRegistry, added to those classes here (after
// bind_outbox and bind_worker).
#include <pybind11/stl.h>

#include <memory>

#include "bind.hpp"
#include "bind_target.hpp"
#include "payq/encryption.hpp"
#include "payq/handler.hpp"
#include "payq/keyring.hpp"
#include "payq/outbox.hpp"

namespace payq::bindings {
namespace {

EncryptedField field_parse(const std::string& name) {
  for (EncryptedField field :
       {EncryptedField::payload, EncryptedField::result, EncryptedField::error, EncryptedField::traceback}) {
    if (name == encrypted_field_name(field)) return field;
  }
  throw InvalidArgument("an encrypted field is payload, result, error or traceback");
}

// Key material arrives as bytes and never goes back to Python.
void bind_keyring_class(py::module_& m) {
  py::class_<Keyring, std::shared_ptr<Keyring>>(m, "Keyring")
      .def(py::init<>())
      .def("add", [](Keyring& self, const std::string& id, const py::bytes& key) { self.add(id, std::string(key)); },
           py::arg("id"), py::arg("key"))
      .def("add_base64", &Keyring::add_base64, py::arg("id"), py::arg("key_base64"))
      .def("current_set", &Keyring::current_set, py::arg("id"))
      .def("current", &Keyring::current)
      .def("has", &Keyring::has, py::arg("id"))
      .def("ids", &Keyring::ids)
      .def("empty", &Keyring::empty)
      .def_static("parse", [](const std::string& keys, const std::string& current) {
        return std::make_shared<Keyring>(Keyring::parse(keys, current));
      }, py::arg("keys"), py::arg("current"))
      .def_static("file_read", [](const std::string& path) { return std::make_shared<Keyring>(Keyring::file_read(path)); },
                  py::arg("path"))
      .def_static("from_env", [] { return std::make_shared<Keyring>(Keyring::from_env()); })
      .def_static("key_generate_base64", &Keyring::key_generate_base64);
}

void bind_fields(py::module_& m) {
  m.def("encryption_json_seal", [](const Keyring& keyring, const std::string& field, std::int64_t task_id,
                                   const std::string& kind, const std::string& clear_json) {
    return json_seal(keyring, field_parse(field), task_id, kind, clear_json);
  });
  m.def("encryption_json_open", [](const Keyring& keyring, const std::string& field, std::int64_t task_id,
                                   const std::string& kind, const std::string& envelope_json) {
    return json_open(keyring, field_parse(field), task_id, kind, envelope_json);
  });
  m.def("encryption_text_open", [](const Keyring& keyring, const std::string& field, std::int64_t task_id,
                                   const std::string& kind, const std::string& sealed) {
    return text_open(keyring, field_parse(field), task_id, kind, sealed);
  });
  m.def("encryption_json_key", &json_sealed_key, py::arg("json_text"));
  m.def("encryption_text_key", &text_sealed_key, py::arg("text"));
  m.def("encryption_task_open", [](const Keyring& keyring, const Task& task) { return task_open(keyring, task); });
  m.def("encryption_attempt_open", [](const Keyring& keyring, const std::string& kind, const TaskAttempt& attempt) {
    return attempt_open(keyring, kind, attempt);
  });
  m.def("encryption_task_encrypted", &task_encrypted, py::arg("task"));

  py::class_<ReencryptBatch>(m, "ReencryptBatch")
      .def_readonly("examined", &ReencryptBatch::examined)
      .def_readonly("rotated", &ReencryptBatch::rotated)
      .def_readonly("unreadable", &ReencryptBatch::unreadable)
      .def_readonly("last_id", &ReencryptBatch::last_id)
      .def_readonly("done", &ReencryptBatch::done);
  m.def("tasks_reencrypt", [](py::handle target, std::shared_ptr<Keyring> keyring, std::int64_t after_id,
                              std::int64_t count_max) {
    return on_target(target, [&](Executor& e) { return tasks_reencrypt(e, *keyring, after_id, count_max); });
  }, py::arg("target"), py::arg("keyring"), py::arg("after_id"), py::arg("count_max"));
  m.def("tasks_key_use", [](py::handle target) {
    std::vector<KeyUse> uses = on_target(target, [&](Executor& e) { return tasks_key_use(e); });
    std::vector<std::tuple<std::string, std::string, std::int64_t>> out;
    for (const auto& use : uses) out.emplace_back(use.key_id, use.state, use.count);
    return out;
  }, py::arg("target"));
}

// The encryption fields of classes bound elsewhere.
void extend_classes(py::module_& m) {
  auto spec = py::reinterpret_borrow<py::class_<TaskSpec>>(m.attr("TaskSpec"));
  spec.def_readwrite("encrypt", &TaskSpec::encrypt);
  spec.def_property(
      "keyring", [](const TaskSpec&) -> py::object { return py::none(); },  // never handed back
      [](TaskSpec& self, std::shared_ptr<Keyring> keyring) { self.keyring = std::move(keyring); });
  auto registry = py::reinterpret_borrow<py::class_<HandlerRegistry, std::shared_ptr<HandlerRegistry>>>(
      m.attr("HandlerRegistry"));
  registry.def("keyring_set", [](HandlerRegistry& self, std::shared_ptr<Keyring> keyring) {
    self.keyring_set(std::move(keyring));
  }, py::arg("keyring"));
}

}  // namespace

void bind_keyring(py::module_& m) {
  bind_keyring_class(m);
  bind_fields(m);
  extend_classes(m);
}

}  // namespace payq::bindings
