// Provider callbacks: recorded once per event, settling the task they name.
#include "payq/inbox.hpp"

#include <nlohmann/json.hpp>

#include "inbox/inbox_statements.hpp"
#include "outbox/outbox_internal.hpp"
#include "payq/error.hpp"

namespace payq {

const char* callback_effect_name(CallbackEffect effect) {
  switch (effect) {
    case CallbackEffect::settled_success: return "settled_success";
    case CallbackEffect::settled_failure: return "settled_failure";
    case CallbackEffect::already_settled: return "already_settled";
    case CallbackEffect::no_task: return "no_task";
    case CallbackEffect::conflict: return "conflict";
    case CallbackEffect::ignored: return "ignored";
    case CallbackEffect::duplicate: return "duplicate";
  }
  return "?";
}

namespace {

using outbox_detail::text_bounded;

constexpr std::int64_t prune_count_max = 100'000;

// The callback contradicts how the task was settled (the provider says it
// paid a payout whose hold was already released, or the reverse): money may
// be out of place, so a human must look. Nothing is changed automatically.
void conflict_alert(Executor& executor, const CallbackEvent& event, std::int64_t task_id, TaskState state) {
  TaskSpec spec;
  spec.kind = "payq.alert";
  spec.queue = "payq.alerts";
  spec.unique_key = "alert:callback:" + event.provider + ":" + event.event_id;
  spec.payload_json = nlohmann::json{{"task_id", task_id},
                                     {"reason", "callback_conflict"},
                                     {"state", task_state_name(state)},
                                     {"provider", event.provider},
                                     {"event_id", event.event_id},
                                     {"applied", event.applied}}
                          .dump();
  if (spec.unique_key->size() > outbox_detail::key_bytes_max) spec.unique_key->resize(outbox_detail::key_bytes_max);
  Outbox(executor).enqueue(spec);
}

}  // namespace

CallbackResult Inbox::receive(const CallbackEvent& event) {
  text_bounded(event.provider, inbox_provider_bytes_max, "provider");
  text_bounded(event.event_id, inbox_event_id_bytes_max, "event id");
  text_bounded(event.key, outbox_detail::key_bytes_max, "callback key");
  const std::string payload = outbox_detail::json_canonical(event.payload_json.empty() ? "{}" : event.payload_json,
                                                            "callback payload", inbox_payload_bytes_max);

  executor_.exec(inbox_sql::event_lock, {event.provider, event.event_id});
  if (!executor_.exec(inbox_sql::event_seen, {event.provider, event.event_id}).empty()) {
    return {CallbackEffect::duplicate, std::nullopt, std::nullopt};
  }

  CallbackResult result;
  Rows found = executor_.exec(inbox_sql::task_by_key_lock, {event.key});
  if (found.empty()) {
    result.effect = CallbackEffect::no_task;
  } else {
    const std::int64_t task_id = found.i64(0, "id");
    const TaskState state = task_state_parse(found.text(0, "state"));
    result.task_id = task_id;
    result.task_state = state;
    const TaskState settled_as = event.applied ? TaskState::succeeded : TaskState::dead;
    // A pending task that never ran was never sent by payq.
    const bool never_sent = state == TaskState::pending && found.i64(0, "attempt") == 0;
    switch (never_sent ? TaskState::held : state) {
      case TaskState::running:
      case TaskState::pending:
      case TaskState::needs_review: {
        const bool running = state == TaskState::running;
        const std::string actor = "callback:" + event.provider;
        const std::string error = "the provider reported it failed (event " + event.event_id + ")";
        executor_.exec(inbox_sql::task_settle,
                       {std::to_string(task_id), task_state_name(settled_as), payload, error,
                        running ? Value(std::to_string(found.i64(0, "lease_token"))) : std::nullopt, actor,
                        std::to_string(running ? std::max<std::int64_t>(0, found.i64(0, "running_ms")) : 0),
                        event.applied ? "callback_applied" : "callback_not_applied", "event " + event.event_id});
        // The task row as it was claimed carries the settlement to run.
        outbox_detail::settle_task(executor_, Outbox(executor_).task_get(task_id), event.applied);
        result.effect = event.applied ? CallbackEffect::settled_success : CallbackEffect::settled_failure;
        result.task_state = settled_as;
        break;
      }
      case TaskState::succeeded:
      case TaskState::dead:
        if (state == settled_as) {
          result.effect = CallbackEffect::already_settled;
        } else {
          result.effect = CallbackEffect::conflict;
          conflict_alert(executor_, event, task_id, state);
        }
        break;
      case TaskState::held:
      case TaskState::cancelled:
        // Never sent to the provider by payq (held, cancelled, or pending
        // before its first attempt): nothing to settle.
        result.effect = CallbackEffect::ignored;
        break;
    }
  }
  executor_.exec(inbox_sql::event_record,
                 {event.provider, event.event_id, event.key, event.applied ? "true" : "false",
                  callback_effect_name(result.effect),
                  result.task_id ? Value(std::to_string(*result.task_id)) : std::nullopt, payload});
  return result;
}

std::int64_t Inbox::prune(std::int64_t older_than_ms, std::int64_t count_max) {
  if (older_than_ms < 0) throw InvalidArgument("older_than_ms cannot be negative");
  if (count_max <= 0 || count_max > prune_count_max) throw InvalidArgument("count_max must be 1..100000");
  return executor_.exec(inbox_sql::prune, {std::to_string(older_than_ms), std::to_string(count_max)})
      .i64(0, "pruned");
}

}  // namespace payq
