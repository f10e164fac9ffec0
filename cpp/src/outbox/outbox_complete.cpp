// Completion: the fenced state change, its attempt record, its settlement
// against the ledger and any alert, in one transaction.
#include <algorithm>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "common/text_internal.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"

namespace payq {

using namespace outbox_detail;

namespace {

constexpr std::size_t error_bytes_max = 4000;

std::string error_bounded(const std::string& error) { return detail::text_truncated(error, error_bytes_max); }

// The last traceback_bytes_max bytes, starting at a line: the innermost
// frames and the exception itself are at the end of a stack trace.
std::string traceback_bounded(const std::string& traceback) {
  if (traceback.size() <= traceback_bytes_max) return traceback;
  const std::string cut = "...\n";
  std::size_t start = traceback.size() - (traceback_bytes_max - cut.size());
  const std::size_t line = traceback.find('\n', start);
  if (line != std::string::npos && line + 1 < traceback.size()) start = line + 1;
  // Never start inside a UTF-8 sequence (continuation bytes are 10xxxxxx).
  while (start < traceback.size() && (static_cast<unsigned char>(traceback[start]) & 0xC0) == 0x80) ++start;
  return cut + traceback.substr(start);
}

constexpr const char* alert_kind = "payq.alert";

void alert(Executor& executor, const Task& task, const std::string& reason) {
  // An alert about an alert would feed on itself (a worker without a
  // payq.alert handler kills each one, which would raise the next).
  if (task.kind == alert_kind) return;
  TaskSpec spec;
  spec.kind = alert_kind;
  spec.queue = alert_queue;
  spec.unique_key = "alert:" + std::to_string(task.id) + ":" + std::to_string(task.attempt) + ":" + reason;
  spec.payload_json = nlohmann::json{{"task_id", task.id},       {"kind", task.kind},
                                     {"queue", task.queue},      {"state", task_state_name(task.state)},
                                     {"attempt", task.attempt},  {"attempt_max", task.attempt_max},
                                     {"reason", reason},         {"error", task.error.value_or("")}}
                          .dump();
  Outbox(executor).enqueue(spec);
}

}  // namespace

Completion Outbox::complete(const CompleteRequest& request) {
  if (request.duration_ms < 0) throw InvalidArgument("duration_ms cannot be negative");
  backoff_validate(request.backoff);
  if (request.outcome.needs_review && request.outcome.kind != OutcomeKind::unknown) {
    throw InvalidArgument("needs_review goes with the unknown outcome only");
  }
  const Outcome& outcome = request.outcome;
  std::string result = "null";
  if (outcome.kind == OutcomeKind::success) {
    result = detail::json_input_canonical(outcome.result_json.empty() ? "null" : outcome.result_json, "task result",
                            task_payload_bytes_max);
  }
  // The delay is drawn now; only a retry or unknown outcome uses it. The
  // attempt number is fixed for a lease token, so the caller's task says it.
  int attempt = request.attempt;
  if (attempt <= 0) {
    Rows current = executor_.exec(outbox_sql::task_get, {std::to_string(request.task_id)});
    if (current.empty()) throw UnknownTask("no task with id " + std::to_string(request.task_id));
    attempt = std::max(1, static_cast<int>(current.i64(0, "attempt")));
  }
  const std::int64_t delay_ms = outcome.retry_after_ms ? std::max<std::int64_t>(0, *outcome.retry_after_ms)
                                                       : backoff_delay_ms(request.backoff, attempt);
  Rows done = executor_.exec(
      outbox_sql::complete,
      {std::to_string(request.task_id), std::to_string(request.lease_token), outcome_kind_name(outcome.kind), result,
       error_bounded(outcome.error), std::to_string(delay_ms), request.worker_id,
       std::to_string(request.duration_ms),
       outcome.kind == OutcomeKind::success ? std::string() : traceback_bounded(outcome.traceback),
       outcome.needs_review ? "true" : "false"});
  if (done.empty()) {
    throw LeaseLost("task " + std::to_string(request.task_id) + " is no longer running under lease " +
                    std::to_string(request.lease_token));
  }
  const Task task = task_from(done, 0);
  Completion completion;
  if (task.state == TaskState::succeeded || task.state == TaskState::dead) {
    // A settlement that cannot run never throws the outcome away: the
    // attempt and result stay, and the task waits for an operator.
    if (auto unsettled = settle_completed(executor_, task)) {
      completion.state = unsettled->state;
      alert(executor_, *unsettled, "settlement_failed");
      completion.alerted = true;
      return completion;
    }
  }
  completion.state = task.state;
  if (task.state == TaskState::dead || task.state == TaskState::needs_review) {
    alert(executor_, task, task_state_name(task.state));
    completion.alerted = true;
  } else if (task.state == TaskState::pending) {
    completion.next_run_in_ms = delay_ms;
    if (task.attempt + 1 == task.attempt_max) {
      // The next attempt is the last: tell an operator before it runs out.
      alert(executor_, task, "last_attempt_next");
      completion.alerted = true;
    }
  }
  return completion;
}

std::vector<std::int64_t> Outbox::complete_success_batch(const std::vector<BatchSuccess>& items,
                                                         const std::string& worker_id) {
  if (items.empty()) return {};
  if (items.size() > complete_batch_count_max) {
    throw InvalidArgument("a batch completion holds at most " + std::to_string(complete_batch_count_max) +
                          " tasks, not " + std::to_string(items.size()));
  }
  std::vector<const BatchSuccess*> sorted;
  sorted.reserve(items.size());
  for (const auto& item : items) sorted.push_back(&item);
  // Ascending ids: concurrent batches lock their rows in one order.
  std::sort(sorted.begin(), sorted.end(), [](auto a, auto b) { return a->task_id < b->task_id; });
  std::vector<std::int64_t> ids, tokens, durations;
  std::vector<std::string> results;
  for (const BatchSuccess* item : sorted) {
    if (!ids.empty() && ids.back() == item->task_id) {
      throw InvalidArgument("task " + std::to_string(item->task_id) + " appears twice in a batch completion");
    }
    if (item->duration_ms < 0) throw InvalidArgument("duration_ms cannot be negative");
    ids.push_back(item->task_id);
    tokens.push_back(item->lease_token);
    durations.push_back(item->duration_ms);
    results.push_back(detail::json_input_canonical(item->result_json.empty() ? "null" : item->result_json,
                                                   "task result", task_payload_bytes_max));
  }
  Rows done = ids.size() == 1
                  ? executor_.exec(outbox_sql::complete_success_one,
                                   {std::to_string(ids[0]), std::to_string(tokens[0]), results[0],
                                    std::to_string(durations[0]), worker_id})
                  : executor_.exec(outbox_sql::complete_success_batch,
                                   {array_text_i64(ids), array_text_i64(tokens), array_text_quoted(results),
                                    array_text_i64(durations), worker_id});
  std::vector<std::int64_t> completed;
  completed.reserve(done.size());
  for (std::size_t i = 0; i < done.size(); ++i) completed.push_back(done.i64(i, "id"));
  if (completed.size() > items.size()) {
    throw std::logic_error("batch completion returned more tasks than it was given");
  }
  return completed;
}

std::int64_t Outbox::leases_rescue(std::int64_t count_max) {
  if (count_max <= 0) throw InvalidArgument("count_max must be positive");
  Rows expired = executor_.exec(outbox_sql::leases_expired, {std::to_string(count_max)});
  for (std::size_t i = 0; i < expired.size(); ++i) {
    const Task task = task_from(expired, i);
    CompleteRequest request;
    request.task_id = task.id;
    request.lease_token = *task.lease_token;
    request.attempt = task.attempt;
    request.outcome.kind = OutcomeKind::unknown;
    request.outcome.error = "lease expired: the worker stopped answering during the attempt";
    request.worker_id = task.worker_id.value_or("unknown");
    request.duration_ms = std::max<std::int64_t>(0, expired.i64(i, "running_ms"));
    complete(request);
  }
  return static_cast<std::int64_t>(expired.size());
}

}  // namespace payq
