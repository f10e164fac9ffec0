// Maps every payq C++ error onto the class of the same name in payq.errors,
// the one home of payq's Python exceptions. The classes come from one
// table, payq::error_classes() (vocabulary.hpp).
#include <string>
#include <unordered_map>

#include "bind.hpp"
#include "payq/error.hpp"
#include "payq/vocabulary.hpp"

namespace payq::bindings {
namespace {

// Borrowed for the life of the interpreter: payq.errors is never unloaded.
std::unordered_map<std::string, PyObject*>& python_types() {
  static std::unordered_map<std::string, PyObject*> types;
  return types;
}

[[noreturn]] void raise_as(const Error& e) {
  PyObject* type = python_types().at(error_class_of(e).name);
  py::object instance = py::reinterpret_borrow<py::object>(type)(e.what());
  if (const auto* database = dynamic_cast<const DatabaseError*>(&e)) {
    const std::string& sqlstate = database->sqlstate();
    instance.attr("sqlstate") = sqlstate.empty() ? py::none() : py::object(py::str(sqlstate));
  }
  if (const auto* hold = dynamic_cast<const HoldInUse*>(&e)) instance.attr("task_id") = hold->task_id();
  PyErr_SetObject(type, instance.ptr());
  throw py::error_already_set();
}

void translate(std::exception_ptr pointer) {
  try {
    std::rethrow_exception(pointer);
  } catch (const Error& e) {
    raise_as(e);
  }
}

}  // namespace

void bind_error(py::module_& m) {
  py::module_ errors = py::module_::import("payq.errors");
  py::list classes;
  for (const ErrorClass& c : error_classes()) {
    // A class the core names but payq.errors lacks fails the import here,
    // loudly, rather than arriving as a bare RuntimeError later.
    python_types()[c.name] = errors.attr(c.name).ptr();
    classes.append(py::make_tuple(c.name, c.base ? py::object(py::str(c.base)) : py::none(),
                                  c.sqlstate_class[0] ? py::object(py::str(c.sqlstate_class)) : py::none()));
  }
  py::register_exception_translator(&translate);
  // (name, base name or None, SQLSTATE class or None), root first.
  m.attr("ERROR_CLASSES") = py::tuple(classes);
  m.def("error_class_for_sqlstate", &error_class_for_sqlstate, py::arg("sqlstate"),
        "The payq.errors class a server's SQLSTATE arrives as, on every executor.");

  // Lets the Python tests prove that each C++ type arrives as its Python twin.
  m.def("_raise_for_test", [](const std::string& name) {
    for (const ErrorClass& c : error_classes()) {
      if (name == c.name) c.throw_sample();
    }
    throw Error("test");
  });
}

}  // namespace payq::bindings
