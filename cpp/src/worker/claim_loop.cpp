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
#include "worker/worker_tracing.hpp"

namespace payq {
namespace {

using Clock = std::chrono::steady_clock;

// A claimed task is started only while at least this fraction of its lease
// remains; otherwise it is given back for a fresh claim rather than started
// under a lease that may expire mid-call (and be rescued as `unknown`).
constexpr int lease_headroom_divisor = 2;

// A handler that runs several tasks in one call (Handler::runs_many) starts
// no further task of the call once this long has passed since it began, so
// the results it already has are recorded without waiting much longer.
constexpr std::chrono::milliseconds run_many_duration_max{20};

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
      counters_(counters),
      completer_(options_.worker_id, database_.options().transient_retry_count_max) {
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
  std::vector<ClaimCursor> cursors(options_.queues.size());
  int failure_count = 0;
  // The batch run last, whose outcomes the completer may still be writing:
  // they are waited for (and logged) after the next claim, so the claim's
  // round trip overlaps their commit. Moving a batch keeps its elements in
  // place, which the handed-in entries point to.
  std::vector<ClaimedTask> previous;
  Pending previous_pending;
  auto previous_settle = [&] {
    if (previous.empty()) return;
    due_settle(connection, previous_pending);
    previous.clear();
  };
  // Bounded by stop: every pass either claims, idles for at most
  // poll_interval, or waits out an error delay; each ends at stop.
  while (!stop_.requested()) {
    std::vector<ClaimedTask> batch;
    try {
      batch = claim_round(connection.get(), picker, cursors);
      const bool settled_some = !previous.empty();
      previous_settle();
      // Until now the previous batch's tasks may still have counted as
      // running against a limited queue's concurrency: claim again once.
      if (batch.empty() && settled_some) batch = claim_round(connection.get(), picker, cursors);
      failure_count = 0;
      database_reached();
    } catch (const Error& e) {
      previous_settle();
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
    Pending pending;
    batch_run(connection, batch, pending);
    previous = std::move(batch);
    previous_pending = std::move(pending);
  }
  previous_settle();
}

// One claim per queue at most: the queue whose weighted turn it is first,
// then, if it had nothing, the others in order.
std::vector<ClaimedTask> ClaimLoop::claim_round(Connection& connection, QueuePicker& picker,
                                                std::vector<ClaimCursor>& cursors) {
  const std::size_t first = picker.next();
  const std::size_t queue_count = options_.queues.size();
  for (std::size_t offset = 0; offset < queue_count; ++offset) {
    const std::size_t queue_index = (first + offset) % queue_count;
    const std::string& queue = options_.queues[queue_index].first;
    ClaimCursor& cursor = cursors.at(queue_index);
    ClaimRequest request{queue, options_.worker_id, options_.claim_batch_count_max};
    const int retry_count_max = database_.options().transient_retry_count_max;
    worker_tracing::ClaimSpan claim_span;
    // A plain queue is claimed by one statement, run as its own transaction
    // (no BEGIN and COMMIT round trips); a limited one needs the locked path.
    std::optional<ClaimKey> after;
    auto claim_plain = [&] {
      const auto now = Clock::now();
      after = cursor.start(now);
      std::optional<std::vector<Task>> tasks = single_statement_on(
          connection, retry_count_max, [&](SingleStatement& alone) { return Outbox(alone).claim_plain(request, after); });
      if (tasks) cursor.record(request, after, *tasks, now);
      return tasks;
    };
    std::optional<std::vector<Task>> plain = claim_plain();
    // A dry cursor says nothing of the tasks before it: scan from the front
    // (record() reset it) before the thread goes idle.
    if (plain && plain->empty() && after) plain = claim_plain();
    std::vector<Task> tasks =
        plain ? std::move(*plain)
              : transact_on(connection, retry_count_max, [&](Transaction& tx) { return Outbox(tx).claim_limited(request); });
    if (tasks.empty()) continue;
    claim_span.record(queue, tasks.size(), options_.worker_id);
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
// given back too (after the outcomes so far are written, so the log reads
// in order). Each outcome is handed to the completer as soon as the handler
// call that produced it returns, and the next task starts while it is being
// written together with other threads' outcomes; run() waits for them after
// its next claim. Successes of batched_completion kinds go the same way
// (the completer groups every kind's outcomes now), counted as batched.
//
// Tasks of asynchronous handlers are only started in that pass, so the
// whole batch is in flight while synchronous tasks run; their results are
// then recorded as they arrive. Consecutive tasks of a handler that runs
// many at once (a Python handler: one crossing into Python) go to it in
// one call.
void ClaimLoop::batch_run(ThreadConnection& connection, std::vector<ClaimedTask>& batch, Pending& pending) {
  pending.due.reserve(batch.size());
  AsyncBatch async(counters_.in_flight, batch.size());
  // Bounded: every pass advances i by at least one.
  for (std::size_t i = 0; i < batch.size();) {
    const ClaimedTask& claimed = batch[i];
    if (stop_.requested()) {
      due_settle(connection, pending);
      for (std::size_t j = i; j < batch.size(); ++j) task_give_back(connection, batch[j].task, "shutdown");
      break;
    }
    if (!lease_headroom_left(claimed)) {
      due_settle(connection, pending);
      task_give_back(connection, claimed.task, "lease_headroom");
      ++i;
      continue;
    }
    const std::optional<HandlerEntry> entry = registry_.find(claimed.task.kind);
    if (entry && entry->handler->asynchronous()) {
      async_start(connection, async, claimed, *entry);
      ++i;
      continue;
    }
    if (entry && entry->handler->runs_many()) {
      std::size_t end = i + 1;
      while (end < batch.size() && batch[end].task.kind == claimed.task.kind) ++end;
      i = run_many(connection, batch, i, end, *entry, pending);
    } else {
      task_run(connection, claimed, entry, pending);
      ++i;
    }
    due_hand_in(pending);
  }
  async_finish(connection, async, pending);
  due_hand_in(pending);
}

bool ClaimLoop::lease_headroom_left(const ClaimedTask& claimed) const {
  const auto lease = std::chrono::milliseconds(claimed.task.timeout_ms);
  return Clock::now() - claimed.claimed_at <= lease / lease_headroom_divisor;
}

void ClaimLoop::task_run(ThreadConnection& connection, const ClaimedTask& claimed,
                         const std::optional<HandlerEntry>& entry, Pending& pending) {
  const Task& task = claimed.task;
  InFlight in_flight(counters_.in_flight);
  const auto started = Clock::now();
  HandlerResult result;
  BackoffPolicy backoff;
  bool batched = false;
  if (entry) {
    result = worker_tracing::attempt_run(task, options_.worker_id, [&] {
      return handler_call(*entry->handler, task, context_for(connection, task));
    });
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
  result_record(connection, task, result, backoff, batched, Clock::now() - started, pending);
}

// The handler runs batch[first, end) in one call and hands each result over
// as it has it; the results are filed once the call returned (for a Python
// handler: after the GIL is released). A task that is not allowed to start
// (stop, low lease, the call's time is up) ends the call; the batch loop
// decides about it. If the call throws, the task after the last result
// handed over is the one that threw.
std::size_t ClaimLoop::run_many(ThreadConnection& connection, std::vector<ClaimedTask>& batch, std::size_t first,
                                std::size_t end, const HandlerEntry& entry, Pending& pending) {
  struct Ran {
    HandlerResult result;
    Clock::duration duration;
  };
  const std::size_t count = end - first;
  std::vector<Ran> ran;
  ran.reserve(count);
  TaskBatchCall call;
  call.tasks.reserve(count);
  for (std::size_t k = first; k < end; ++k) call.tasks.push_back(&batch[k].task);
  const auto call_started = Clock::now();
  auto last = call_started;
  call.context = [&](std::size_t k) { return context_for(connection, *call.tasks.at(k)); };
  call.may_start = [&](std::size_t k) {
    if (k != ran.size()) throw std::logic_error("a handler asked to start a task out of order");
    if (k == 0) return true;  // the batch loop checked it
    return k < count && !stop_.requested() && lease_headroom_left(batch[first + k]) &&
           Clock::now() - call_started < run_many_duration_max;
  };
  call.done = [&](std::size_t k, HandlerResult result) {
    if (k != ran.size() || k >= count) throw std::logic_error("a handler handed over a result out of order");
    const auto now = Clock::now();
    ran.push_back(Ran{std::move(result), now - last});
    last = now;
  };
  worker_tracing::ManyTraced traced(call, options_.worker_id);
  counters_.in_flight += static_cast<std::int64_t>(count);
  std::string error;
  bool threw = false;
  try {
    entry.handler->handle_many(call);
  } catch (const std::exception& e) {
    threw = true;
    error = e.what();
  } catch (...) {
    threw = true;
    error = "handler threw a non-standard exception";
  }
  if (!threw && ran.empty()) {
    threw = true;
    error = "the handler returned without running the task";
  }
  if (threw && ran.size() < count) {
    const auto now = Clock::now();
    ran.push_back(Ran{handler_exception_result(*call.tasks[ran.size()], error), now - last});
  }
  counters_.in_flight -= static_cast<std::int64_t>(count);
  for (std::size_t k = 0; k < ran.size(); ++k) {
    result_record(connection, *call.tasks[k], ran[k].result, entry.backoff, entry.batched_completion,
                  ran[k].duration, pending);
  }
  return first + ran.size();
}

void ClaimLoop::result_record(ThreadConnection& connection, const Task& task, HandlerResult& result,
                              const BackoffPolicy& backoff, bool batched, Clock::duration duration,
                              Pending& pending) {
  const auto elapsed = std::max(Clock::duration::zero(), duration);
  counters_.attempt_duration_observe(elapsed);
  const std::int64_t duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  if (result.queue_pause_ms) queue_pause(connection, task, *result.queue_pause_ms);
  if (!result.outcome) {
    worker_tracing::attempt_end_by_handler(task, elapsed);
    ++counters_.completed_by_handler;
    nlohmann::json fields = task_fields(task);
    fields["duration_ms"] = duration_ms;
    log_.write("info", "task_completed_by_handler", fields);
    return;
  }
  result_storable_or_unknown(*result.outcome);
  CompletionEntry entry;
  entry.task = &task;
  entry.outcome = std::move(*result.outcome);
  entry.backoff = backoff;
  entry.duration_ms = duration_ms;
  entry.batched = batched && success_settles_nothing(task, entry.outcome);
  if (pending.due.size() >= pending.due.capacity()) {
    throw std::logic_error("more outcomes than tasks in a batch");
  }
  pending.due.push_back(std::move(entry));
}

// A task whose outcome was not recorded stays `running` until its lease
// expires and maintenance rescues the attempt as `unknown`: safe, because
// an unknown attempt is retried with the same idempotency key and never
// compensated. A lost lease means this attempt is a zombie (the task moved
// on): nothing was written, and there is nothing to undo here.
void ClaimLoop::due_hand_in(Pending& pending) {
  std::vector<CompletionEntry>& due = pending.due;
  completer_.hand_in(due.data() + pending.due_handed, due.size() - pending.due_handed);
  pending.due_handed = due.size();
  // The ones already written are logged now rather than at the batch's end.
  while (pending.due_logged < pending.due_handed && completer_.decided(due[pending.due_logged])) {
    entry_log(due[pending.due_logged++]);
  }
}

void ClaimLoop::due_settle(ThreadConnection& connection, Pending& pending) {
  std::vector<CompletionEntry>& due = pending.due;
  due_hand_in(pending);
  completer_.wait(due.data() + pending.due_logged, due.size() - pending.due_logged,
                  [&connection]() -> Connection& { return connection.get(); });
  bool failed = false;
  for (std::size_t i = pending.due_logged; i < due.size(); ++i) {
    entry_log(due[i]);
    failed = failed || due[i].status == CompletionEntry::Status::failed ||
             due[i].status == CompletionEntry::Status::commit_unknown;
  }
  if (failed) connection.drop_if_broken();
  // Kept reserved: the batch may go on after a give-back.
  due.clear();
  pending.due_handed = 0;
  pending.due_logged = 0;
}

void ClaimLoop::complete_serve() {
  ThreadConnection connection(database_);
  completer_.serve([&connection]() -> Connection& { return connection.get(); },
                   [this] { return stop_.requested(); });
}

void ClaimLoop::entry_log(const CompletionEntry& entry) {
  worker_tracing::attempt_end(entry);  // every outcome whose fate is known passes here once
  const bool batched = entry.batched;
  const Outcome& outcome = entry.outcome;
  nlohmann::json fields = task_fields(*entry.task);
  fields["outcome"] = outcome_kind_name(outcome.kind);
  fields["duration_ms"] = entry.duration_ms;
  if (batched) fields["batched"] = true;
  switch (entry.status) {
    case CompletionEntry::Status::completed: {
      outcome_count(outcome.kind);
      if (batched) ++counters_.batched_completions;
      const Completion& completion = entry.completion;
      fields["state"] = task_state_name(completion.state);
      if (completion.next_run_in_ms) fields["next_run_in_ms"] = *completion.next_run_in_ms;
      if (completion.alerted) fields["alerted"] = true;
      if (!outcome.error.empty()) fields["error"] = outcome.error;
      log_.write(outcome.kind == OutcomeKind::success ? "info" : "warning", "task_done", fields);
      return;
    }
    case CompletionEntry::Status::lease_lost:
      ++counters_.lease_lost;
      fields["error"] = entry.error;
      log_.write("warning", "task_lease_lost", fields);
      return;
    case CompletionEntry::Status::commit_unknown:
      ++counters_.complete_errors;
      fields["error"] = entry.error;
      log_.write("error", "task_complete_unknown", fields);
      return;
    case CompletionEntry::Status::failed:
    case CompletionEntry::Status::waiting:
      ++counters_.complete_errors;
      fields["error"] = entry.error;
      log_.write("error", "task_complete_failed", fields);
      return;
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

