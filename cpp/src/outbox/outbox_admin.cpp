// Reading tasks, operator actions, queue settings and pruning.
#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"

namespace payq {

using namespace outbox_detail;

namespace outbox_detail {

std::string json_canonical(const std::string& text, const char* what, std::size_t bytes_max) {
  if (text.size() > bytes_max) {
    throw InvalidArgument(std::string(what) + " is larger than " + std::to_string(bytes_max) + " bytes");
  }
  try {
    return nlohmann::json::parse(text).dump();
  } catch (const nlohmann::json::parse_error& e) {
    throw InvalidArgument(std::string(what) + " is not valid JSON: " + e.what());
  }
}

std::string array_text_quoted(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out.push_back(',');
    out.push_back('"');
    for (const char c : values[i]) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

std::string array_text_i64(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  out.push_back('}');
  return out;
}

Task task_from(const Rows& rows, std::size_t row) {
  Task t;
  t.id = rows.i64(row, "id");
  t.queue = rows.text(row, "queue");
  t.kind = rows.text(row, "kind");
  t.payload_json = rows.text(row, "payload");
  t.state = task_state_parse(rows.text(row, "state"));
  t.priority = static_cast<int>(rows.i64(row, "priority"));
  t.attempt = static_cast<int>(rows.i64(row, "attempt"));
  t.attempt_max = static_cast<int>(rows.i64(row, "attempt_max"));
  t.timeout_ms = rows.i64(row, "timeout_ms");
  t.unique_key = rows.at(row, "unique_key");
  t.partition_key = rows.at(row, "partition_key");
  t.idempotency_key = rows.text(row, "idempotency_key");
  t.amount_minor = rows.i64_or_null(row, "amount_minor");
  t.currency = rows.at(row, "currency");
  t.settlement.hold_id = rows.i64_or_null(row, "settle_hold_id");
  t.settlement.capture_account_id = rows.i64_or_null(row, "settle_capture_account_id");
  t.settlement.reverse_transaction_id = rows.i64_or_null(row, "settle_reverse_transaction_id");
  t.settlement.followup_json = rows.at(row, "followup");
  t.lease_token = rows.i64_or_null(row, "lease_token");
  t.lease_until = rows.at(row, "lease_until");
  t.worker_id = rows.at(row, "worker_id");
  t.result_json = rows.at(row, "result");
  t.error = rows.at(row, "error");
  t.run_at = rows.text(row, "run_at");
  t.created_at = rows.text(row, "created_at");
  t.finished_at = rows.at(row, "finished_at");
  if (auto traceparent = rows.at(row, "traceparent")) {
    t.trace_context = TraceContext{std::move(*traceparent), rows.at(row, "tracestate").value_or("")};
  }
  return t;
}

}  // namespace outbox_detail

namespace {

constexpr std::size_t actor_bytes_max = 200;
constexpr std::size_t note_bytes_max = 2000;

Task task_locked(Executor& executor, std::int64_t task_id) {
  if (task_id <= 0) throw InvalidArgument("task id must be positive");
  Rows rows = executor.exec(outbox_sql::task_lock, {std::to_string(task_id)});
  if (rows.empty()) throw UnknownTask("no task with id " + std::to_string(task_id));
  return task_from(rows, 0);
}

void action_validate(const std::string& actor, const std::string& note) {
  text_bounded(actor, actor_bytes_max, "actor");
  if (note.size() > note_bytes_max) throw InvalidArgument("a note is at most 2000 bytes");
}

void state_set(Executor& executor, const Task& task, TaskState state, const char* action, const std::string& actor,
               const std::string& note) {
  executor.exec(outbox_sql::task_set_state,
                {std::to_string(task.id), task_state_name(state), action, actor, note});
}

std::string state_list(const std::vector<TaskState>& states) {
  std::string out;
  for (TaskState s : states) out += (out.empty() ? "" : ", ") + std::string(task_state_name(s));
  return out;
}

// The states an action needs come from the one table (vocabulary.hpp) that
// the CLI and the dashboard also read.
void state_require(const Task& task, OperatorAction action_kind) {
  const std::vector<TaskState> allowed = operator_action_states(action_kind);
  const char* action = operator_action_name(action_kind);
  for (TaskState s : allowed) {
    if (task.state == s) return;
  }
  throw InvalidState("task " + std::to_string(task.id) + " is " + task_state_name(task.state) + "; " + action +
                     " needs " + state_list(allowed));
}

}  // namespace

void Outbox::task_release(std::int64_t task_id, const std::string& actor, const std::string& note) {
  action_validate(actor, note);
  const Task task = task_locked(executor_, task_id);
  state_require(task, OperatorAction::release);
  state_set(executor_, task, TaskState::pending, "release", actor, note);
}

void Outbox::task_retry(std::int64_t task_id, const std::string& actor, const std::string& note) {
  action_validate(actor, note);
  const Task task = task_locked(executor_, task_id);
  state_require(task, OperatorAction::retry);
  if (task.settlement.hold_id || task.settlement.reverse_transaction_id) {
    // Its failure side already ran (hold released, payment reversed): running
    // it again would move money without cover.
    throw InvalidState("task " + std::to_string(task_id) +
                       " was settled as failed; enqueue a new task (with a new hold) instead");
  }
  state_set(executor_, task, TaskState::pending, "retry", actor, note);
}

void Outbox::task_cancel(std::int64_t task_id, const std::string& actor, const std::string& note) {
  action_validate(actor, note);
  const Task task = task_locked(executor_, task_id);
  // Never started (or back to pending): definitely not applied, so its
  // failure side runs.
  state_require(task, OperatorAction::cancel);
  if (task.attempt > 0) {
    throw InvalidState("task " + std::to_string(task_id) +
                       " has run before and may have been applied; wait for its outcome or resolve it");
  }
  state_set(executor_, task, TaskState::cancelled, "cancel", actor, note);
  settle_task(executor_, task, false);
}

void Outbox::task_resolve(std::int64_t task_id, bool applied, const std::string& actor, const std::string& note) {
  ResolveRequest request;
  request.task_id = task_id;
  request.applied = applied;
  request.actor = actor;
  request.note = note;
  task_resolve(request);
}

namespace {

// Which resolution was taken, as recorded in the task's actions.
const char* resolve_action(const ResolveRequest& r) {
  if (!r.applied) return "resolve_not_applied";
  if (r.capture_account_id) return "resolve_applied_captured_into";
  if (r.hold_release_manual) return "resolve_applied_settled_by_hand";
  return "resolve_applied";
}

void resolve_validate(const ResolveRequest& r, const Task& task) {
  const bool redirected = r.capture_account_id || r.hold_release_manual;
  if (!redirected) return;
  const std::string task_text = "task " + std::to_string(task.id);
  if (!r.applied) throw InvalidArgument("only an applied resolution settles a hold another way");
  if (r.capture_account_id && r.hold_release_manual) {
    throw InvalidArgument("capture into another account or settle by hand, not both");
  }
  if (!task.settlement.hold_id) throw InvalidArgument(task_text + " settles no hold");
  if (r.capture_account_id && *r.capture_account_id <= 0) throw InvalidArgument("capture account id must be positive");
  if (r.hold_release_manual && r.note.empty()) {
    throw InvalidArgument("settling " + task_text + " by hand needs a note saying how the ledger was adjusted");
  }
}

}  // namespace

void Outbox::task_resolve(const ResolveRequest& request) {
  action_validate(request.actor, request.note);
  const Task task = task_locked(executor_, request.task_id);
  state_require(task, OperatorAction::resolve);
  resolve_validate(request, task);
  std::string note = request.note;
  if (request.capture_account_id) {
    note = "captured into account " + std::to_string(*request.capture_account_id) + (note.empty() ? "" : ": ") + note;
  }
  state_set(executor_, task, request.applied ? TaskState::succeeded : TaskState::dead, resolve_action(request),
            request.actor, note);
  SettleOverride how;
  how.capture_account_id = request.capture_account_id;
  how.hold_release = request.hold_release_manual;
  settle_task(executor_, task, request.applied, how);
}

Task Outbox::task_get(std::int64_t task_id) {
  Rows rows = executor_.exec(outbox_sql::task_get, {std::to_string(task_id)});
  if (rows.empty()) throw UnknownTask("no task with id " + std::to_string(task_id));
  return task_from(rows, 0);
}

std::vector<Task> Outbox::tasks_list(const TaskFilter& filter) {
  if (filter.state) task_state_parse(*filter.state);
  if (filter.limit <= 0 || filter.limit > 1000) throw InvalidArgument("a page holds 1 to 1000 tasks");
  if (filter.after_id < 0) throw InvalidArgument("after_id cannot be negative");
  if (filter.created_before_ms_ago && *filter.created_before_ms_ago < 0) {
    throw InvalidArgument("created_before_ms_ago cannot be negative");
  }
  if (filter.kind) text_bounded(*filter.kind, kind_bytes_max, "task kind");
  if (filter.key) text_bounded(*filter.key, key_bytes_max, "task key");
  Value older;
  if (filter.created_before_ms_ago) older = std::to_string(*filter.created_before_ms_ago);
  Rows rows = executor_.exec(outbox_sql::tasks_list, {filter.state, filter.queue, std::to_string(filter.after_id),
                                                      std::to_string(filter.limit), filter.kind, filter.key, older});
  std::vector<Task> tasks;
  for (std::size_t i = 0; i < rows.size(); ++i) tasks.push_back(task_from(rows, i));
  return tasks;
}

std::vector<Task> Outbox::tasks_list(const std::optional<std::string>& state, const std::optional<std::string>& queue,
                                     std::int64_t after_id, std::int64_t limit) {
  TaskFilter filter;
  filter.state = state;
  filter.queue = queue;
  filter.after_id = after_id;
  filter.limit = limit;
  return tasks_list(filter);
}

std::vector<TaskAttempt> Outbox::attempts(std::int64_t task_id) {
  Rows rows = executor_.exec(outbox_sql::attempts, {std::to_string(task_id)});
  std::vector<TaskAttempt> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    TaskAttempt a;
    a.task_id = rows.i64(i, "task_id");
    a.attempt = static_cast<int>(rows.i64(i, "attempt"));
    a.lease_token = rows.i64(i, "lease_token");
    a.worker_id = rows.text(i, "worker_id");
    a.outcome = rows.text(i, "outcome");
    a.error = rows.at(i, "error");
    a.duration_ms = rows.i64(i, "duration_ms");
    a.started_at = rows.text(i, "started_at");
    a.finished_at = rows.text(i, "finished_at");
    a.traceback = rows.at(i, "traceback");
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<TaskAction> Outbox::actions(std::int64_t task_id) {
  Rows rows = executor_.exec(outbox_sql::actions, {std::to_string(task_id)});
  std::vector<TaskAction> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out.push_back({rows.i64(i, "task_id"), rows.text(i, "action"), rows.text(i, "actor"), rows.text(i, "note"),
                   rows.text(i, "created_at")});
  }
  return out;
}

std::vector<QueueStats> Outbox::stats() {
  Rows rows = executor_.exec(outbox_sql::stats, {});
  std::vector<QueueStats> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out.push_back({rows.text(i, "queue"), rows.text(i, "state"), rows.i64(i, "n")});
  }
  return out;
}

std::vector<QueueOverview> Outbox::queues_overview() {
  Rows rows = executor_.exec(outbox_sql::queues_overview, {});
  auto optional_int = [&](std::size_t i, const char* column) -> std::optional<int> {
    if (rows.is_null(i, column)) return std::nullopt;
    return static_cast<int>(rows.i64(i, column));
  };
  auto optional_i64 = [&](std::size_t i, const char* column) { return rows.i64_or_null(i, column); };
  std::vector<QueueOverview> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    QueueOverview q;
    q.name = rows.text(i, "name");
    q.paused = rows.boolean(i, "paused");
    q.paused_until = rows.at(i, "paused_until");
    q.concurrency_max = optional_int(i, "concurrency_max");
    q.rate_count_max = optional_int(i, "rate_count_max");
    q.rate_window_ms = optional_i64(i, "rate_window_ms");
    q.amount_max_minor = rows.i64_or_null(i, "amount_max_minor");
    q.amount_currency = rows.at(i, "amount_currency");
    q.amount_window_ms = optional_i64(i, "amount_window_ms");
    q.weight = static_cast<int>(rows.i64(i, "weight"));
    q.pending = rows.i64(i, "pending");
    q.runnable = rows.i64(i, "runnable");
    q.running = rows.i64(i, "running");
    q.held = rows.i64(i, "held");
    q.dead = rows.i64(i, "dead");
    q.needs_review = rows.i64(i, "needs_review");
    q.oldest_runnable_age_ms = rows.i64_or_null(i, "oldest_runnable_age_ms");
    q.started_last_minute = rows.i64(i, "started_last_minute");
    out.push_back(std::move(q));
  }
  return out;
}

namespace {

// Records an operator's queue action, when an actor is named (see QueueActionBy).
void queue_action_record(Executor& executor, const std::string& queue, const char* action, const QueueActionBy& by,
                         const nlohmann::json& detail) {
  if (by.actor.empty()) return;
  executor.exec(outbox_sql::queue_action_record, {queue, action, by.actor, by.note, detail.dump()});
}

void queue_action_validate(const QueueActionBy& by) {
  if (!by.actor.empty()) action_validate(by.actor, by.note);
  else if (!by.note.empty()) throw InvalidArgument("a note on a queue action needs an actor");
}

// UnknownQueue unless the queue has settings or tasks. The default queue
// (enqueue without a queue name uses it) and the alerts queue are always
// known: an operator may pause either before its first task.
void queue_require_known(Executor& executor, const std::string& queue) {
  if (queue == TaskSpec{}.queue || queue == alert_queue) return;
  if (executor.exec(outbox_sql::queue_known, {queue}).boolean(0, "known")) return;
  throw UnknownQueue("no queue named '" + queue + "': it has no settings and no tasks (a typo?)");
}

nlohmann::json queue_config_json(const QueueConfig& c) {
  nlohmann::json out = {{"weight", c.weight}};
  auto put = [&](const char* key, const auto& value) {
    if (value) out[key] = *value;
  };
  put("concurrency_max", c.concurrency_max);
  put("rate_count_max", c.rate_count_max);
  put("rate_window_ms", c.rate_window_ms);
  put("amount_max_minor", c.amount_max_minor);
  put("amount_currency", c.amount_currency);
  put("amount_window_ms", c.amount_window_ms);
  return out;
}

}  // namespace

void Outbox::queue_configure(const QueueConfig& c, const QueueActionBy& by) {
  queue_name_validate(c.name);
  queue_action_validate(by);
  auto positive = [](const auto& v, const char* what) {
    if (v && *v <= 0) throw InvalidArgument(std::string(what) + " must be positive");
  };
  positive(c.concurrency_max, "concurrency_max");
  positive(c.rate_count_max, "rate_count_max");
  positive(c.rate_window_ms, "rate_window_ms");
  positive(c.amount_max_minor, "amount_max_minor");
  positive(c.amount_window_ms, "amount_window_ms");
  for (const auto& [window, name] : {std::pair{c.rate_window_ms, "rate_window_ms"},
                                     std::pair{c.amount_window_ms, "amount_window_ms"}}) {
    if (window && *window > queue_window_ms_max) throw InvalidArgument(std::string(name) + " is at most 366 days");
  }
  if (c.rate_count_max.has_value() != c.rate_window_ms.has_value()) {
    throw InvalidArgument("a rate limit needs both rate_count_max and rate_window_ms");
  }
  if (c.amount_max_minor.has_value() != c.amount_window_ms.has_value() ||
      c.amount_max_minor.has_value() != c.amount_currency.has_value()) {
    throw InvalidArgument("an amount limit needs amount_max_minor, amount_currency and amount_window_ms");
  }
  if (c.weight < 1 || c.weight > 1000) throw InvalidArgument("a queue weight is 1 to 1000");
  auto text = [](const auto& v) -> Value { return v ? Value(std::to_string(*v)) : std::nullopt; };
  executor_.exec(outbox_sql::queue_configure,
                 {c.name, text(c.concurrency_max), text(c.rate_count_max), text(c.rate_window_ms),
                  text(c.amount_max_minor), c.amount_currency, text(c.amount_window_ms), std::to_string(c.weight)});
  queue_action_record(executor_, c.name, "configure", by, queue_config_json(c));
}

void Outbox::queue_pause(const std::string& queue, bool paused, const QueueActionBy& by) {
  queue_name_validate(queue);
  queue_action_validate(by);
  queue_require_known(executor_, queue);
  executor_.exec(outbox_sql::queue_pause, {queue, paused ? "t" : "f"});
  queue_action_record(executor_, queue, paused ? "pause" : "resume", by, nlohmann::json::object());
}

void Outbox::queue_pause_until(const std::string& queue, std::int64_t pause_ms, const QueueActionBy& by) {
  queue_name_validate(queue);
  if (pause_ms <= 0 || pause_ms > task_delay_ms_max) throw InvalidArgument("a pause is 1 ms to 366 days");
  queue_action_validate(by);
  queue_require_known(executor_, queue);
  executor_.exec(outbox_sql::queue_pause_until, {queue, std::to_string(pause_ms)});
  queue_action_record(executor_, queue, "pause_for", by, {{"pause_ms", pause_ms}});
}

std::vector<QueueAction> Outbox::queue_actions(const std::optional<std::string>& queue, std::int64_t limit) {
  if (queue) queue_name_validate(*queue);
  if (limit <= 0 || limit > 1000) throw InvalidArgument("a page holds 1 to 1000 queue actions");
  Rows rows = executor_.exec(outbox_sql::queue_actions, {queue, std::to_string(limit)});
  std::vector<QueueAction> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out.push_back({rows.i64(i, "id"), rows.text(i, "queue"), rows.text(i, "action"), rows.text(i, "actor"),
                   rows.text(i, "note"), rows.text(i, "detail"), rows.text(i, "created_at")});
  }
  return out;
}

std::int64_t Outbox::prune(std::int64_t finished_before_ms_ago, std::int64_t count_max) {
  if (finished_before_ms_ago < 0 || count_max <= 0) throw InvalidArgument("prune needs a retention >= 0 and a bound");
  Rows rows = executor_.exec(outbox_sql::prune_tasks,
                             {std::to_string(finished_before_ms_ago), std::to_string(count_max)});
  return rows.i64(0, "pruned");
}

}  // namespace payq
