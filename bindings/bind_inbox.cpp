// The inbox for Python: payq/inbox.py verifies and parses a provider's
// callback, then records and settles it here.
#include <pybind11/stl.h>

#include "bind.hpp"
#include "bind_target.hpp"
#include "payq/inbox.hpp"

namespace payq::bindings {

void bind_inbox(py::module_& m) {
  // Returns (effect, task id or None, task state or None).
  m.def("inbox_receive", [](py::handle target, std::string provider, std::string event_id, std::string key,
                            bool applied, std::string payload_json) {
    CallbackEvent event{std::move(provider), std::move(event_id), std::move(key), applied, std::move(payload_json)};
    const CallbackResult r = on_target(target, [&](Executor& e) { return Inbox(e).receive(event); });
    std::optional<std::string> state;
    if (r.task_state) state = task_state_name(*r.task_state);
    return std::make_tuple(std::string(callback_effect_name(r.effect)), r.task_id, state);
  });
  m.def("inbox_prune", [](py::handle target, std::int64_t older_than_ms, std::int64_t count_max) {
    return on_target(target, [&](Executor& e) { return Inbox(e).prune(older_than_ms, count_max); });
  });
}

}  // namespace payq::bindings
