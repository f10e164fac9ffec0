// The core's vocabulary (vocabulary.hpp) as constants of payq._core, so the
// Python package, the CLI and the dashboard never keep lists of their own.
#include <pybind11/stl.h>

#include "bind.hpp"
#include "payq/vocabulary.hpp"

namespace payq::bindings {
namespace {

template <typename Enum, std::size_t N>
py::tuple names_of(const std::array<Enum, N>& values, const char* (*name_of)(Enum)) {
  py::list names;
  for (Enum value : values) names.append(name_of(value));
  return py::tuple(names);
}

}  // namespace

void bind_vocabulary(py::module_& m) {
  m.attr("TASK_STATES") = names_of(task_states, task_state_name);
  m.attr("OUTCOMES") = names_of(outcome_kinds, outcome_kind_name);
  m.attr("ATTEMPT_OUTCOMES") = py::tuple(py::cast(attempt_outcome_names()));
  m.attr("ACTIONS") = names_of(operator_actions, operator_action_name);
  py::dict by_state;
  for (TaskState state : task_states) {
    py::list allowed;
    for (OperatorAction action : operator_actions) {
      if (operator_action_allowed(action, state)) allowed.append(operator_action_name(action));
    }
    by_state[py::str(task_state_name(state))] = py::tuple(allowed);
  }
  m.attr("ACTIONS_BY_STATE") = by_state;
  m.attr("QUEUE_NAME_MAX") = queue_name_bytes_max;
  m.attr("QUEUE_NAME_PATTERN") = queue_name_pattern;
  m.attr("WORKER_ID_MAX") = worker_id_bytes_max;

  m.def("worker_id_default", &worker_id_default, "A worker id: <host>:<pid>:<6 hex digits>.");
}

}  // namespace payq::bindings
