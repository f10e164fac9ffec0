// The claim loop (claim_loop.hpp): claim a batch, run it, record the
// outcomes; asynchronous handlers are in claim_async.cpp.
#include "worker/claim_loop.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "common/text_internal.hpp"
#include "payq/error.hpp"
#include "payq/vocabulary.hpp"
#include "worker/claim_async.hpp"

namespace payq {
namespace {

using Clock = std::chrono::steady_clock;

// A claimed task is started only while at least this fraction of its lease
// remains; otherwise it is given back for a fresh claim rather than started
// under a lease that may expire mid-call (and be rescued as `unknown`).
constexpr int lease_headroom_divisor = 2;

// Counts a task in flight for as long as its handler and completion run.
class InFlight {
 public:
  explicit InFlight(std::atomic<std::int64_t>& counter) : counter_(counter) { ++counter_; }
  ~InFlight() { --counter_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<std::int64_t>& counter_;
};

// A success whose result the store cannot hold (not JSON, a NUL character,
// nested too deep, too large) is not a success: the handler ran and may have
// acted, so the attempt is `unknown` with the reason, nothing is settled, and
// no batch of other tasks' successes fails with it.
void result_storable_or_unknown(Outcome& outcome) {
  if (outcome.kind != OutcomeKind::success) return;
  try {
    detail::json_input_canonical(outcome.result_json.empty() ? "null" : outcome.result_json, "the handler's result",
                                 task_payload_bytes_max);
  } catch (const InvalidArgument& e) {
    outcome.kind = OutcomeKind::unknown;
    outcome.error = std::string("result cannot be stored: ") + e.what();
    outcome.result_json = "null";
  }
}

// A success may wait for the batch's flush only if nothing but the state
// change is due: no hold to capture, no reversal or follow-up waiting.
bool success_batchable(const Task& task, const Outcome& outcome) {
  const Settlement& s = task.settlement;
  return outcome.kind == OutcomeKind::success && !s.hold_id && !s.reverse_transaction_id && !s.followup_json;
}

// Successes without settlement are recorded by one fenced statement (the
// batch completion): run as its own transaction, it needs no BEGIN and
// COMMIT round trips. Returns the ids of the tasks it completed.
std::vector<std::int64_t> successes_complete_alone(Connection& connection, const std::vector<BatchSuccess>& items,
                                                   const std::string& worker_id, int retry_count_max) {
  return single_statement_on(connection, retry_count_max, [&](SingleStatement& alone) {
    return Outbox(alone).complete_success_batch(items, worker_id);
  });
}

Completion success_complete_alone(Connection& connection, const CompleteRequest& request, int retry_count_max) {
  const BatchSuccess item{request.task_id, request.lease_token, request.outcome.result_json, request.duration_ms};
  if (successes_complete_alone(connection, {item}, request.worker_id, retry_count_max).empty()) {
    throw LeaseLost("task " + std::to_string(request.task_id) + " is no longer running under lease " +
                    std::to_string(request.lease_token));
  }
  Completion completion;
  completion.state = TaskState::succeeded;
  return completion;
}

nlohmann::json task_fields(const Task& task) {
  return {{"task_id", task.id}, {"kind", task.kind}, {"queue", task.queue}, {"attempt", task.attempt}};
}

std::int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

// ---------------------------------------------------------------- options

// The fields are WorkerOptions' own, so errors name them as such.
void ClaimLoopOptions::validate() const {
  auto fail = [](const std::string& message) { throw InvalidArgument("worker options: " + message); };
  if (queues.empty()) fail("queues is empty");
  if (queues.size() > static_cast<std::size_t>(worker_queue_count_max)) {
    fail("at most " + std::to_string(worker_queue_count_max) + " queues");
  }
  std::set<std::string> names;
  for (const auto& [name, weight] : queues) {
    if (!queue_name_valid(name)) fail("queue name '" + name + "' is not 1-100 of [A-Za-z0-9_.:-]");
    if (!names.insert(name).second) fail("queue '" + name + "' is listed twice");
    if (weight < 1 || weight > worker_queue_weight_max) {
      fail("queue '" + name + "' weight must be 1 to " + std::to_string(worker_queue_weight_max));
    }
  }
  if (claim_batch_count_max < 1 || claim_batch_count_max > payq::claim_batch_count_max) {
    fail("claim_batch_count_max must be 1 to " + std::to_string(payq::claim_batch_count_max));
  }
  if (poll_interval < worker_poll_interval_min || poll_interval > worker_poll_interval_max) {
    fail("poll_interval must be " + std::to_string(worker_poll_interval_min.count()) + " to " +
         std::to_string(worker_poll_interval_max.count()) + " ms");
  }
  if (worker_id.empty() || worker_id.size() > worker_id_bytes_max) {
    fail("worker_id must be 1 to " + std::to_string(worker_id_bytes_max) + " bytes");
  }
  reconnect.validate("claim loop");
}

ClaimLoop::ClaimLoop(Database& database, HandlerRegistry& registry, ClaimLoopOptions options, StopSignal& stop,
                     WakeTokens& wake, WorkerLog& log, WorkerCounters& counters)
    : database_(database),
      registry_(registry),
      options_(std::move(options)),
      stop_(stop),
      wake_(wake),
      log_(log),
      counters_(counters) {
  options_.validate();
}

Connection& ClaimLoop::ThreadConnection::get() {
  if (lease_ && !(*lease_)->is_open()) lease_.reset();
  if (!lease_) lease_.emplace(database_.acquire());
  return **lease_;
}

void ClaimLoop::ThreadConnection::drop_if_broken() {
  if (lease_ && !(*lease_)->is_open()) lease_.reset();
}

// ---------------------------------------------------------------- queue choice

QueuePicker::QueuePicker(const std::vector<std::pair<std::string, int>>& queues) {
  for (const auto& queue : queues) {
    weights_.push_back(queue.second);
    weight_total_ += queue.second;
  }
  current_.assign(weights_.size(), 0);
}

// Smooth weighted round-robin (as in nginx): every queue earns its weight,
// the richest is picked and pays the total. Weights 5:1:1 give
// a a b a c a a rather than a a a a a b c.
std::size_t QueuePicker::next() {
  std::size_t best = 0;
  for (std::size_t i = 0; i < weights_.size(); ++i) {
    current_[i] += weights_[i];
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= weight_total_;
  return best;
}

// ---------------------------------------------------------------- the loop

void ClaimLoop::database_failed(int thread_index, const char* error) noexcept {
  if (database_unavailable_.exchange(true)) return;
  database_unavailable_since_ms_ = steady_now_ms();
  log_.write("error", "database_unavailable", {{"thread", thread_index}, {"error", error}});
}

void ClaimLoop::database_reached() noexcept {
  if (!database_unavailable_.load(std::memory_order_relaxed) || !database_unavailable_.exchange(false)) return;
  log_.write("info", "database_available",
             {{"unavailable_ms", steady_now_ms() - database_unavailable_since_ms_.load()}});
}

void ClaimLoop::run(int index) {
  QueuePicker picker(options_.queues);
  // Threads start at different points of the rotation, so that with a
  // single batch each the queues are spread over the threads.
  for (int i = 0; i < index; ++i) picker.next();
  ThreadConnection connection(database_);
  int failure_count = 0;
  // Bounded by stop: every pass either claims, idles for at most
  // poll_interval, or waits out an error delay; each ends at stop.
  while (!stop_.requested()) {
    std::vector<ClaimedTask> batch;
    try {
      batch = claim_round(connection.get(), picker);
      failure_count = 0;
      database_reached();
    } catch (const Error& e) {
      // Connection loss, a server restart or failover, a failed claim:
      // wait (with backoff) and retry; never exit for it.
      ++counters_.database_errors;
      failure_count = std::min(failure_count + 1, options_.reconnect.failure_count_max());
      connection.drop_if_broken();
      database_failed(index, e.what());
      if (log_.debug()) {
        log_.write("debug", "claim_failed", {{"thread", index}, {"error", e.what()}, {"failure_count", failure_count}});
      }
      stop_.wait_for(options_.reconnect.delay(failure_count));
      continue;
    }
    if (batch.empty()) {
      // Logged under the token lock: once this line is out, the thread is
      // waiting with no token left, and only a wake or the poll timeout
      // ends the wait (tests rely on this to prove that NOTIFY wakes threads).
      wake_.idle_wait(options_.poll_interval, [&] {
        if (log_.debug()) log_.write("debug", "worker_idle", {{"thread", index}});
      });
      continue;
    }
    // A full batch suggests more work is waiting: wake a colleague.
    if (batch.size() == options_.claim_batch_count_max) wake_.wake(1);
    batch_run(connection, batch);
  }
}

// One claim per queue at most: the queue whose weighted turn it is first,
// then, if it had nothing, the others in order.
std::vector<ClaimedTask> ClaimLoop::claim_round(Connection& connection, QueuePicker& picker) {
  const std::size_t first = picker.next();
  const std::size_t queue_count = options_.queues.size();
  for (std::size_t offset = 0; offset < queue_count; ++offset) {
    const std::string& queue = options_.queues[(first + offset) % queue_count].first;
    ClaimRequest request{queue, options_.worker_id, options_.claim_batch_count_max};
    const int retry_count_max = database_.options().transient_retry_count_max;
    // A plain queue is claimed by one statement, run as its own transaction
    // (no BEGIN and COMMIT round trips); a limited one needs the locked path.
    std::optional<std::vector<Task>> plain = single_statement_on(
        connection, retry_count_max, [&](SingleStatement& alone) { return Outbox(alone).claim_plain(request); });
    std::vector<Task> tasks =
        plain ? std::move(*plain)
              : transact_on(connection, retry_count_max, [&](Transaction& tx) { return Outbox(tx).claim_limited(request); });
    if (tasks.empty()) continue;
    if (tasks.size() > options_.claim_batch_count_max) {
      throw std::logic_error("claim returned " + std::to_string(tasks.size()) + " tasks, more than asked");
    }
    const auto claimed_at = Clock::now();
    counters_.claimed += static_cast<std::int64_t>(tasks.size());
    std::vector<ClaimedTask> batch;
    batch.reserve(tasks.size());
    for (auto& task : tasks) {
      if (task.state != TaskState::running || !task.lease_token) {
        throw std::logic_error("claim returned task " + std::to_string(task.id) + " not running under a lease");
      }
      batch.push_back(ClaimedTask{std::move(task), claimed_at});
    }
    return batch;
  }
  return {};
}

// Runs the batch in claim order. At stop, the tasks not yet started are
// given back; a task whose lease has run too low while earlier tasks ran is
// given back too. Successes of batched_completion kinds are queued and
// recorded together at the end, and before any give-back, since the leases
// of the queued tasks run as low as the given-back task's.
//
// Tasks of asynchronous handlers are only started in that pass, so the
// whole batch is in flight while synchronous tasks run; their results are
// then recorded as they arrive.
void ClaimLoop::batch_run(ThreadConnection& connection, std::vector<ClaimedTask>& batch) {
  std::vector<QueuedSuccess> queued;
  queued.reserve(batch.size());
  AsyncBatch async(counters_.in_flight, batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const ClaimedTask& claimed = batch[i];
    if (stop_.requested()) {
      successes_flush(connection, queued);
      for (std::size_t j = i; j < batch.size(); ++j) task_give_back(connection, batch[j].task, "shutdown");
      break;
    }
    const auto lease = std::chrono::milliseconds(claimed.task.timeout_ms);
    if (Clock::now() - claimed.claimed_at > lease / lease_headroom_divisor) {
      successes_flush(connection, queued);
      task_give_back(connection, claimed.task, "lease_headroom");
      continue;
    }
    const std::optional<HandlerEntry> entry = registry_.find(claimed.task.kind);
    if (entry && entry->handler->asynchronous()) {
      async_start(connection, async, claimed, *entry);
      continue;
    }
    task_run(connection, claimed, entry, queued);
  }
  async_finish(connection, async, queued);
  successes_flush(connection, queued);
}

void ClaimLoop::task_run(ThreadConnection& connection, const ClaimedTask& claimed,
                      const std::optional<HandlerEntry>& entry, std::vector<QueuedSuccess>& queued) {
  const Task& task = claimed.task;
  InFlight in_flight(counters_.in_flight);
  const auto started = Clock::now();
  HandlerResult result;
  BackoffPolicy backoff;
  bool batched = false;
  if (entry) {
    result = handler_call(*entry->handler, task, context_for(connection, task));
    backoff = entry->backoff;
    batched = entry->batched_completion;
  } else {
    ++counters_.unknown_kind;
    log_.write("warning", "task_unknown_kind", task_fields(task));
    Outcome outcome;
    outcome.kind = OutcomeKind::fail;
    outcome.error = unknown_task_kind_error;
    result = outcome;
    backoff = registry_.default_backoff();
  }
  result_record(connection, task, result, backoff, batched, Clock::now() - started, queued);
}

void ClaimLoop::result_record(ThreadConnection& connection, const Task& task, HandlerResult& result,
                           const BackoffPolicy& backoff, bool batched, Clock::duration duration,
                           std::vector<QueuedSuccess>& queued) {
  const auto elapsed = std::max(Clock::duration::zero(), duration);
  counters_.attempt_duration_observe(elapsed);
  const std::int64_t duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  if (result.queue_pause_ms) queue_pause(connection, task, *result.queue_pause_ms);
  if (!result.outcome) {
    ++counters_.completed_by_handler;
    nlohmann::json fields = task_fields(task);
    fields["duration_ms"] = duration_ms;
    log_.write("info", "task_completed_by_handler", fields);
    return;
  }
  result_storable_or_unknown(*result.outcome);
  if (batched && success_batchable(task, *result.outcome)) {
    if (queued.size() >= complete_batch_count_max) {
      throw std::logic_error("more successes queued than one batch completion holds");
    }
    queued.push_back(QueuedSuccess{&task, result.outcome->result_json, duration_ms});
    return;
  }
  task_complete(connection, task, *result.outcome, backoff, duration_ms);
}

// Records the queued successes in one transaction and empties the queue.
// A task not completed lost its lease (a zombie attempt): nothing was
// written for it. A result that is not JSON refuses the whole batch, so
// then each success is recorded on its own, where only the bad one fails.
// Any other failure leaves the tasks `running` until their leases expire and
// maintenance rescues them as `unknown`: safe for idempotent handlers.
void ClaimLoop::successes_flush(ThreadConnection& connection, std::vector<QueuedSuccess>& queued) {
  if (queued.empty()) return;
  std::vector<QueuedSuccess> flushing = std::move(queued);
  queued.clear();
  std::vector<BatchSuccess> items;
  items.reserve(flushing.size());
  for (const auto& q : flushing) {
    items.push_back(BatchSuccess{q.task->id, *q.task->lease_token, q.result_json, q.duration_ms});
  }
  std::vector<std::int64_t> completed;
  try {
    completed = successes_complete_alone(connection.get(), items, options_.worker_id,
                                         database_.options().transient_retry_count_max);
  } catch (const InvalidArgument& e) {
    log_.write("warning", "task_batch_complete_refused", {{"count", flushing.size()}, {"error", e.what()}});
    for (const auto& q : flushing) {
      Outcome outcome;
      outcome.result_json = q.result_json;
      task_complete(connection, *q.task, outcome, registry_.default_backoff(), q.duration_ms);
    }
    return;
  } catch (const Error& e) {
    counters_.complete_errors += static_cast<std::int64_t>(flushing.size());
    connection.drop_if_broken();
    const bool unknown = dynamic_cast<const CommitUnknown*>(&e) != nullptr;
    log_.write("error", unknown ? "task_batch_complete_unknown" : "task_batch_complete_failed",
        {{"count", flushing.size()}, {"error", e.what()}});
    return;
  }
  const std::set<std::int64_t> done(completed.begin(), completed.end());
  for (const auto& q : flushing) {
    nlohmann::json fields = task_fields(*q.task);
    fields["outcome"] = outcome_kind_name(OutcomeKind::success);
    fields["duration_ms"] = q.duration_ms;
    fields["batched"] = true;
    if (done.count(q.task->id) != 0) {
      ++counters_.succeeded;
      ++counters_.batched_completions;
      fields["state"] = task_state_name(TaskState::succeeded);
      log_.write("info", "task_done", fields);
    } else {
      ++counters_.lease_lost;
      fields["error"] = "task " + std::to_string(q.task->id) + " is no longer running under lease " +
                        std::to_string(*q.task->lease_token);
      log_.write("warning", "task_lease_lost", fields);
    }
  }
}

// The context of one attempt; attempts_read uses the thread's connection,
// so it is valid only while the handler call lasts.
TaskContext ClaimLoop::context_for(ThreadConnection& connection, const Task& task) {
  const std::int64_t task_id = task.id;
  return TaskContext{options_.worker_id, *task.lease_token, [this] { return stop_.requested(); },
                     [this, &connection, task_id] {
                       return transact_on(connection.get(), database_.options().transient_retry_count_max,
                                          [&](Transaction& tx) { return Outbox(tx).attempts(task_id); });
                     }};
}

// Any exception from a handler is a `retry`: the handler contract says a
// handler that may have applied its effect returns `unknown` instead of
// throwing.
HandlerResult ClaimLoop::handler_call(Handler& handler, const Task& task, const TaskContext& context) {
  std::string error;
  try {
    return handler.handle(task, context);
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "handler threw a non-standard exception";
  }
  return handler_exception_result(task, error);
}

HandlerResult ClaimLoop::handler_exception_result(const Task& task, const std::string& error) {
  ++counters_.handler_exceptions;
  nlohmann::json fields = task_fields(task);
  fields["error"] = error;
  log_.write("warning", "task_handler_exception", fields);
  Outcome outcome;
  outcome.kind = OutcomeKind::retry;
  outcome.error = error.empty() ? "handler threw an exception" : error;
  return outcome;
}

// Records the outcome in a fresh transaction. LeaseLost means this attempt
// is a zombie (its lease expired and the task moved on): nothing is written
// and there is nothing to undo here. Any other failure leaves the task
// `running` until its lease expires and maintenance rescues the attempt as
// `unknown`: safe, because an unknown attempt is retried with the same
// idempotency key and never compensated.
void ClaimLoop::task_complete(ThreadConnection& connection, const Task& task, const Outcome& outcome,
                           const BackoffPolicy& backoff, std::int64_t duration_ms) {
  CompleteRequest request;
  request.task_id = task.id;
  request.lease_token = *task.lease_token;
  request.attempt = task.attempt;
  request.outcome = outcome;
  request.worker_id = options_.worker_id;
  request.duration_ms = duration_ms;
  request.backoff = backoff;
  nlohmann::json fields = task_fields(task);
  fields["outcome"] = outcome_kind_name(outcome.kind);
  fields["duration_ms"] = duration_ms;
  try {
    const int retry_count_max = database_.options().transient_retry_count_max;
    const Completion completion =
        success_batchable(task, outcome)
            ? success_complete_alone(connection.get(), request, retry_count_max)
            : transact_on(connection.get(), retry_count_max, [&](Transaction& tx) { return Outbox(tx).complete(request); });
    outcome_count(outcome.kind);
    fields["state"] = task_state_name(completion.state);
    if (completion.next_run_in_ms) fields["next_run_in_ms"] = *completion.next_run_in_ms;
    if (completion.alerted) fields["alerted"] = true;
    if (!outcome.error.empty()) fields["error"] = outcome.error;
    log_.write(outcome.kind == OutcomeKind::success ? "info" : "warning", "task_done", fields);
  } catch (const LeaseLost& e) {
    ++counters_.lease_lost;
    fields["error"] = e.what();
    log_.write("warning", "task_lease_lost", fields);
  } catch (const CommitUnknown& e) {
    ++counters_.complete_errors;
    connection.drop_if_broken();
    fields["error"] = e.what();
    log_.write("error", "task_complete_unknown", fields);
  } catch (const Error& e) {
    ++counters_.complete_errors;
    connection.drop_if_broken();
    fields["error"] = e.what();
    log_.write("error", "task_complete_failed", fields);
  }
}

// Back-pressure asked for by a handler. Losing it costs only the pause
// (the outcome is still recorded), so a failure is logged, not raised.
void ClaimLoop::queue_pause(ThreadConnection& connection, const Task& task, std::int64_t pause_ms) {
  nlohmann::json fields = task_fields(task);
  fields["pause_ms"] = pause_ms;
  try {
    transact_on(connection.get(), database_.options().transient_retry_count_max,
                [&](Transaction& tx) { Outbox(tx).queue_pause_until(task.queue, pause_ms); });
    ++counters_.queue_pauses;
    log_.write("warning", "queue_paused", fields);
  } catch (const Error& e) {
    connection.drop_if_broken();
    fields["error"] = e.what();
    log_.write("error", "queue_pause_failed", fields);
  }
}

// A task given back was never started: it returns to `pending` without an
// attempt counted. LeaseLost here means the lease already expired and
// maintenance took the task over, which is fine.
void ClaimLoop::task_give_back(ThreadConnection& connection, const Task& task, const char* reason) {
  nlohmann::json fields = task_fields(task);
  fields["reason"] = reason;
  try {
    transact_on(connection.get(), database_.options().transient_retry_count_max,
                [&](Transaction& tx) { Outbox(tx).give_back(task.id, *task.lease_token); });
    ++counters_.given_back;
    log_.write("info", "task_given_back", fields);
  } catch (const Error& e) {
    connection.drop_if_broken();
    fields["error"] = e.what();
    log_.write("error", "task_give_back_failed", fields);
  }
}

void ClaimLoop::outcome_count(OutcomeKind kind) {
  switch (kind) {
    case OutcomeKind::success: ++counters_.succeeded; return;
    case OutcomeKind::retry: ++counters_.retried; return;
    case OutcomeKind::fail: ++counters_.failed; return;
    case OutcomeKind::unknown: ++counters_.unknown; return;
  }
}

}  // namespace payq

