// The words that cross languages: task states, attempt outcomes, operator
// actions and the states that allow them, the rule for a queue's name, the
// default worker id and the error classes. Written here once; the Python
// package, the CLI, the dashboard and the tests read them from payq._core,
// and tests_py/test_vocabulary.py checks the schema's CHECK constraints and
// payq.errors against them.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

namespace payq {

class Error;

// ---- Task states

enum class TaskState { held, pending, running, succeeded, dead, needs_review, cancelled };
inline constexpr std::array<TaskState, 7> task_states = {TaskState::held,      TaskState::pending,
                                                         TaskState::running,   TaskState::succeeded,
                                                         TaskState::dead,      TaskState::needs_review,
                                                         TaskState::cancelled};
const char* task_state_name(TaskState state);
// InvalidArgument for any other text.
TaskState task_state_parse(const std::string& name);

// ---- Outcomes of one attempt, as a handler reports them

enum class OutcomeKind {
  success,  // applied; result stored; settlement's success side runs
  retry,    // definitely not applied; try again after a backoff
  fail,     // definitely not applied, never will be; task dead; failure side runs
  unknown,  // may have been applied; retried with the same idempotency key, never compensated
};
inline constexpr std::array<OutcomeKind, 4> outcome_kinds = {OutcomeKind::success, OutcomeKind::retry,
                                                             OutcomeKind::fail, OutcomeKind::unknown};
const char* outcome_kind_name(OutcomeKind kind);
// InvalidArgument for any other text: an outcome payq cannot read must never
// pass for `retry`, which would send a payment again.
OutcomeKind outcome_kind_parse(const std::string& name);

// What an attempt record may say: the four outcomes, or `returned` for a
// claimed task handed back unstarted at shutdown.
inline constexpr const char* attempt_outcome_returned = "returned";
std::vector<std::string> attempt_outcome_names();

// ---- Operator actions on a task

enum class OperatorAction { release, retry, cancel, resolve };
inline constexpr std::array<OperatorAction, 4> operator_actions = {OperatorAction::release, OperatorAction::retry,
                                                                   OperatorAction::cancel, OperatorAction::resolve};
const char* operator_action_name(OperatorAction action);
// InvalidArgument for any other text.
OperatorAction operator_action_parse(const std::string& name);
// The states in which `action` is allowed. Two actions also look at the
// task itself: cancel only a task that never ran (attempt 0), retry not a
// task whose failure side already moved money (a released hold, a reversal).
std::vector<TaskState> operator_action_states(OperatorAction action);
bool operator_action_allowed(OperatorAction action, TaskState state);

// ---- Queue names: 1..queue_name_bytes_max of letters, digits and _ . : -

inline constexpr std::size_t queue_name_bytes_max = 100;
// The same rule as a POSIX regular expression, as the queue table's CHECK.
inline constexpr const char* queue_name_pattern = "^[A-Za-z0-9_.:-]{1,100}$";
bool queue_name_valid(const std::string& name);
// InvalidArgument, naming the fault, unless queue_name_valid(name).
void queue_name_validate(const std::string& name);

// ---- Workers

// "<host>:<pid>:<6 hex digits>", at most worker_id_bytes_max bytes (its
// end is kept when the host name is absurdly long).
inline constexpr std::size_t worker_id_bytes_max = 200;
std::string worker_id_default();

// ---- Error classes (error.hpp), each crossing into Python as the
// payq.errors class of the same name

struct ErrorClass {
  const char* name;
  const char* base;  // the parent class's name; nullptr for Error, the root
  // The SQLSTATE class a server error of this kind carries in `.sqlstate`
  // ("40": transaction rollback, "08": connection exception); "" if none.
  const char* sqlstate_class;
  // True if `error` is of this class or of a class derived from it.
  bool (*matches)(const Error& error);
  // Throws an instance (never returns), for the tests of the translation.
  void (*throw_sample)();
};
// Root first; every class after its base.
const std::vector<ErrorClass>& error_classes();
// The most derived entry of error_classes() that `error` belongs to.
const ErrorClass& error_class_of(const Error& error);
// The class a server's SQLSTATE stands for on any executor: a transaction
// rollback (40000, 40001 serialization failure, 40003, 40P01 deadlock) is
// TransientError, anything else DatabaseError (40002 too: a deferred
// constraint that failed at commit fails again if run again).
const char* error_class_for_sqlstate(const std::string& sqlstate);

}  // namespace payq
