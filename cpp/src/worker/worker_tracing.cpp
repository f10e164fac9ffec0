// The worker's spans (worker_tracing.hpp).
#include "worker/worker_tracing.hpp"

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "payq/vocabulary.hpp"
#include "payq/worker.hpp"

namespace payq::worker_tracing {
namespace {

// Attempts in flight are bounded by the worker's threads times its claim
// batch; this bound only guards against a leak.
constexpr std::size_t open_attempt_count_max =
    static_cast<std::size_t>(worker_concurrency_max) * payq::claim_batch_count_max;

// Open attempt spans by lease token (unique per attempt): opened on the
// claiming thread, ended there too, but possibly after other attempts of
// the batch were opened and ended. Nodes never move, so a span stays put
// while its scope points at it.
struct OpenAttempts {
  std::mutex mutex;
  std::unordered_map<std::int64_t, tracing::Span> spans;
  std::atomic<std::size_t> count{0};
};

OpenAttempts& open_attempts() {
  static OpenAttempts open;
  return open;
}

tracing::Span attempt_take(std::int64_t lease_token) {
  OpenAttempts& open = open_attempts();
  std::lock_guard<std::mutex> guard(open.mutex);
  auto node = open.spans.extract(lease_token);
  if (node.empty()) return {};
  open.count.store(open.spans.size(), std::memory_order_relaxed);
  return std::move(node.mapped());
}

// The claim this thread made last, which its attempts link to.
thread_local std::optional<TraceContext> claim_last;

tracing::SpanStart attempt_start(const Task& task) {
  tracing::SpanStart start;
  start.name = "payq.attempt";
  start.kind = tracing::SpanKind::consumer;
  start.remote_parent = task.trace_context;
  start.link = claim_last;
  start.attributes = {{"messaging.system", std::string("payq")},
                      {"messaging.operation.type", std::string("process")},
                      {"payq.queue", task.queue},
                      {"payq.task.kind", task.kind},
                      {"payq.task.id", task.id},
                      {"payq.task.attempt", static_cast<std::int64_t>(task.attempt)},
                      {"payq.task.attempt_max", static_cast<std::int64_t>(task.attempt_max)}};
  return start;
}

}  // namespace

void ClaimSpan::record_slow(const std::string& queue, std::size_t count, const std::string& worker_id) {
  tracing::SpanStart start;
  start.name = "payq.claim";
  start.start_unix_ns = start_unix_ns_;
  start.attributes = {{"messaging.system", std::string("payq")},
                      {"messaging.operation.type", std::string("receive")},
                      {"payq.queue", queue},
                      {"payq.claim.count", static_cast<std::int64_t>(count)},
                      {"payq.worker.id", worker_id}};
  tracing::Span span = tracing::Span::start(std::move(start));
  claim_last = span.context();
}

tracing::Span* attempt_open(const Task& task, const std::string& worker_id) {
  if (!task.lease_token) return nullptr;
  tracing::SpanStart start = attempt_start(task);
  start.attributes.push_back({"payq.worker.id", worker_id});
  tracing::Span span = tracing::Span::start(std::move(start));
  if (!span.active()) return nullptr;
  OpenAttempts& open = open_attempts();
  // Ended (past the bound, or displaced) only after the lock is released:
  // ending calls the tracer.
  tracing::Span displaced;
  tracing::Span* placed = nullptr;
  {
    std::lock_guard<std::mutex> guard(open.mutex);
    if (open.spans.size() >= open_attempt_count_max) {
      displaced = std::move(span);
    } else {
      tracing::Span& slot = open.spans[*task.lease_token];
      displaced = std::move(slot);
      slot = std::move(span);
      placed = &slot;
      open.count.store(open.spans.size(), std::memory_order_relaxed);
    }
  }
  return placed;
}

namespace {

// The span an attempt ends with: its open one, or, when tracing is on but
// none was opened, one that starts `duration` ago.
tracing::Span attempt_closing(const Task& task, std::chrono::nanoseconds duration) {
  if (!tracing::enabled() && open_attempts().count.load(std::memory_order_relaxed) == 0) return {};
  tracing::Span span = task.lease_token ? attempt_take(*task.lease_token) : tracing::Span();
  if (!span.active() && tracing::enabled()) {
    tracing::SpanStart start = attempt_start(task);
    start.start_unix_ns = tracing::now_unix_ns() - duration.count();
    span = tracing::Span::start(std::move(start));
  }
  return span;
}

}  // namespace

ManyTraced::ManyTraced(TaskBatchCall& call, const std::string& worker_id) {
  if (!tracing::enabled()) return;
  active_ = true;
  previous_ = tracing::current();
  const std::vector<const Task*>* tasks = &call.tasks;
  call.may_start = [may_start = std::move(call.may_start), tasks, &worker_id, previous = previous_](std::size_t k) {
    if (!may_start(k)) return false;
    tracing::Span* span = attempt_open(*tasks->at(k), worker_id);
    tracing::current_exchange(span != nullptr ? span : previous);
    return true;
  };
  call.done = [done = std::move(call.done), previous = previous_](std::size_t k, HandlerResult result) {
    tracing::current_exchange(previous);
    done(k, std::move(result));
  };
}

ManyTraced::~ManyTraced() {
  if (active_) tracing::current_exchange(previous_);
}

AttemptCurrent::AttemptCurrent(const Task& task) noexcept {
  OpenAttempts& open = open_attempts();
  if (open.count.load(std::memory_order_relaxed) == 0 || !task.lease_token) return;
  tracing::Span* span = nullptr;
  {
    std::lock_guard<std::mutex> guard(open.mutex);
    auto found = open.spans.find(*task.lease_token);
    if (found != open.spans.end()) span = &found->second;
  }
  if (span == nullptr) return;
  // The attempt's own thread waits for this write meanwhile and touches
  // the span again only after it.
  active_ = true;
  previous_ = tracing::current_exchange(span);
}

AttemptCurrent::~AttemptCurrent() {
  if (active_) tracing::current_exchange(previous_);
}

void attempt_end(const CompletionEntry& entry) {
  tracing::Span span = attempt_closing(*entry.task, std::chrono::milliseconds(entry.duration_ms));
  if (!span.active()) return;
  const OutcomeKind kind = entry.outcome.kind;
  span.set("payq.attempt.outcome", outcome_kind_name(kind));
  // The error text stays in the attempt record: it may quote the provider's
  // answer, and with it data a span must not carry.
  switch (entry.status) {
    case CompletionEntry::Status::completed:
      span.set("payq.task.state", task_state_name(entry.completion.state));
      if (entry.completion.next_run_in_ms) span.set("payq.task.next_run_in_ms", *entry.completion.next_run_in_ms);
      if (kind == OutcomeKind::success) {
        span.status(tracing::Status::ok);
      } else {
        span.status(tracing::Status::error, outcome_kind_name(kind));
      }
      return;
    case CompletionEntry::Status::lease_lost:
      span.set("payq.attempt.lease_lost", true);
      span.status(tracing::Status::error, "lease lost: the task moved on without this attempt");
      return;
    case CompletionEntry::Status::commit_unknown:
      span.status(tracing::Status::error, "the outcome's commit is unknown");
      return;
    case CompletionEntry::Status::waiting:
    case CompletionEntry::Status::failed:
      span.status(tracing::Status::error, "the outcome was not recorded");
      return;
  }
}

void attempt_end_by_handler(const Task& task, std::chrono::steady_clock::duration duration) {
  tracing::Span span = attempt_closing(task, std::chrono::duration_cast<std::chrono::nanoseconds>(duration));
  span.set("payq.attempt.outcome", "completed_by_handler");
}

void attempt_abandoned(const Task& task) {
  if (!task.lease_token) return;
  if (!tracing::enabled() && open_attempts().count.load(std::memory_order_relaxed) == 0) return;
  tracing::Span span = attempt_take(*task.lease_token);
  span.set("payq.attempt.outcome", "abandoned");
  span.status(tracing::Status::error, "no result within the lease");
}

}  // namespace payq::worker_tracing
