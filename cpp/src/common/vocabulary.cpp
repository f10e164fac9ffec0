// The lists of payq/vocabulary.hpp, written once.
#include "payq/vocabulary.hpp"

#include <unistd.h>

#include <cstdio>
#include <random>
#include <sstream>
#include <type_traits>

#include "common/text_internal.hpp"
#include "payq/error.hpp"

namespace payq {

namespace {

// The names a parse refuses with, listed for the message.
template <typename Enum, std::size_t N>
std::string names_listed(const std::array<Enum, N>& values, const char* (*name_of)(Enum)) {
  std::string out;
  for (Enum value : values) out += (out.empty() ? "" : ", ") + std::string(name_of(value));
  return out;
}

template <typename Enum, std::size_t N>
Enum parse_or_refuse(const std::string& text, const std::array<Enum, N>& values, const char* (*name_of)(Enum),
                     const char* what) {
  for (Enum value : values) {
    if (text == name_of(value)) return value;
  }
  throw InvalidArgument("unknown " + std::string(what) + " '" + text + "' (" + names_listed(values, name_of) + ")");
}

}  // namespace

const char* task_state_name(TaskState state) {
  switch (state) {
    case TaskState::held: return "held";
    case TaskState::pending: return "pending";
    case TaskState::running: return "running";
    case TaskState::succeeded: return "succeeded";
    case TaskState::dead: return "dead";
    case TaskState::needs_review: return "needs_review";
    case TaskState::cancelled: return "cancelled";
  }
  return "unknown";
}

TaskState task_state_parse(const std::string& name) {
  return parse_or_refuse(name, task_states, task_state_name, "task state");
}

const char* outcome_kind_name(OutcomeKind kind) {
  switch (kind) {
    case OutcomeKind::success: return "success";
    case OutcomeKind::retry: return "retry";
    case OutcomeKind::fail: return "fail";
    case OutcomeKind::unknown: return "unknown";
  }
  return "unknown";
}

OutcomeKind outcome_kind_parse(const std::string& name) {
  return parse_or_refuse(name, outcome_kinds, outcome_kind_name, "outcome");
}

std::vector<std::string> attempt_outcome_names() {
  std::vector<std::string> names;
  for (OutcomeKind kind : outcome_kinds) names.emplace_back(outcome_kind_name(kind));
  names.emplace_back(attempt_outcome_returned);
  return names;
}

const char* operator_action_name(OperatorAction action) {
  switch (action) {
    case OperatorAction::release: return "release";
    case OperatorAction::retry: return "retry";
    case OperatorAction::cancel: return "cancel";
    case OperatorAction::resolve: return "resolve";
  }
  return "unknown";
}

OperatorAction operator_action_parse(const std::string& name) {
  return parse_or_refuse(name, operator_actions, operator_action_name, "task action");
}

std::vector<TaskState> operator_action_states(OperatorAction action) {
  switch (action) {
    // A held task waits for approval.
    case OperatorAction::release: return {TaskState::held};
    // Only a task that finally failed (or was cancelled) is sent again.
    case OperatorAction::retry: return {TaskState::dead, TaskState::cancelled};
    // Only a task not yet started: cancelling a running one could not stop its side effect.
    case OperatorAction::cancel: return {TaskState::held, TaskState::pending};
    // Only a task whose outcome is unknown waits for a human's answer.
    case OperatorAction::resolve: return {TaskState::needs_review};
  }
  return {};
}

bool operator_action_allowed(OperatorAction action, TaskState state) {
  for (TaskState allowed : operator_action_states(action)) {
    if (allowed == state) return true;
  }
  return false;
}

namespace {

bool queue_name_char_valid(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == ':' || c == '-';
}

}  // namespace

bool queue_name_valid(const std::string& name) {
  if (name.empty() || name.size() > queue_name_bytes_max) return false;
  for (char c : name) {
    if (!queue_name_char_valid(c)) return false;
  }
  return true;
}

void queue_name_validate(const std::string& name) {
  detail::text_bounded(name, queue_name_bytes_max, "queue name");
  for (char c : name) {
    if (!queue_name_char_valid(c)) {
      throw InvalidArgument("queue name '" + name + "' may use letters, digits and _ . : - only");
    }
  }
}

std::string worker_id_default() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "%s", "host");
  std::random_device device;
  char suffix[8] = {};
  std::snprintf(suffix, sizeof suffix, "%06x", static_cast<unsigned>(device() & 0xffffffu));
  std::ostringstream out;
  out << host << ':' << getpid() << ':' << suffix;
  std::string id = out.str();
  if (id.size() > worker_id_bytes_max) id = id.substr(id.size() - worker_id_bytes_max);
  return id;
}

// ---- Error classes

namespace {

template <typename E>
bool error_matches(const Error& error) {
  if constexpr (std::is_same_v<E, Error>) {
    (void)error;
    return true;
  } else {
    return dynamic_cast<const E*>(&error) != nullptr;
  }
}

// A sample of each class; the database errors carry a SQLSTATE of their kind.
template <typename E>
[[noreturn]] void error_throw() {
  throw E("test");
}
template <>
[[noreturn]] void error_throw<DatabaseError>() {
  throw DatabaseError("test", "22012");
}
template <>
[[noreturn]] void error_throw<TransientError>() {
  throw TransientError("test", "40001");
}
template <>
[[noreturn]] void error_throw<ConnectionLost>() {
  throw ConnectionLost("test", "08006");
}
template <>
[[noreturn]] void error_throw<CommitUnknown>() {
  throw CommitUnknown("test", "08006");
}
template <>
[[noreturn]] void error_throw<HoldInUse>() {
  throw HoldInUse("test", 7);
}

template <typename E>
ErrorClass error_class(const char* name, const char* base, const char* sqlstate_class = "") {
  return {name, base, sqlstate_class, &error_matches<E>, &error_throw<E>};
}

}  // namespace

const std::vector<ErrorClass>& error_classes() {
  static const std::vector<ErrorClass> classes = {
      error_class<Error>("Error", nullptr),
      error_class<ConfigError>("ConfigError", "Error"),
      error_class<DatabaseError>("DatabaseError", "Error"),
      error_class<TransientError>("TransientError", "DatabaseError", "40"),
      error_class<ConnectionLost>("ConnectionLost", "DatabaseError", "08"),
      error_class<CommitUnknown>("CommitUnknown", "DatabaseError"),
      error_class<MigrationError>("MigrationError", "Error"),
      error_class<InvalidAmount>("InvalidAmount", "Error"),
      error_class<UnknownCurrency>("UnknownCurrency", "Error"),
      error_class<CurrencyMismatch>("CurrencyMismatch", "Error"),
      error_class<UnknownAccount>("UnknownAccount", "Error"),
      error_class<AccountClosed>("AccountClosed", "Error"),
      error_class<InsufficientFunds>("InsufficientFunds", "Error"),
      error_class<LimitExceeded>("LimitExceeded", "Error"),
      error_class<Unbalanced>("Unbalanced", "Error"),
      error_class<IdempotencyConflict>("IdempotencyConflict", "Error"),
      error_class<InvalidState>("InvalidState", "Error"),
      error_class<HoldInUse>("HoldInUse", "InvalidState"),
      error_class<InvalidArgument>("InvalidArgument", "Error"),
      error_class<UnknownTaskKind>("UnknownTaskKind", "Error"),
      error_class<UnknownTask>("UnknownTask", "Error"),
      error_class<UnknownQueue>("UnknownQueue", "InvalidArgument"),
      error_class<LeaseLost>("LeaseLost", "Error"),
      error_class<ResourceExhausted>("ResourceExhausted", "Error"),
      error_class<EncryptionError>("EncryptionError", "Error"),
      error_class<KeyMissing>("KeyMissing", "EncryptionError"),
      error_class<DecryptionFailed>("DecryptionFailed", "EncryptionError"),
  };
  return classes;
}

const ErrorClass& error_class_of(const Error& error) {
  // Every class comes after its base, so the last match is the most derived.
  const ErrorClass* found = &error_classes().front();
  for (const ErrorClass& c : error_classes()) {
    if (c.matches(error)) found = &c;
  }
  return *found;
}

const char* error_class_for_sqlstate(const std::string& sqlstate) {
  // 40002 (a deferred constraint failed at commit) would fail the same way
  // again: it is no reason to re-run the transaction.
  for (const char* transient : {"40000", "40001", "40003", "40P01"}) {
    if (sqlstate == transient) return "TransientError";
  }
  return "DatabaseError";
}

}  // namespace payq
