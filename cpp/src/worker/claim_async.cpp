// Asynchronous handlers under the claim loop: every asynchronous task of a
// claimed batch is started first, so one worker thread has the whole batch
// in flight (HTTP calls on the client's event loop, no thread per call);
// then each result is recorded as it arrives, with the same fenced
// completion as a synchronous handler's.
#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "payq/error.hpp"
#include "worker/claim_async.hpp"
#include "worker/worker_tracing.hpp"

namespace payq {
namespace {

// How long past the latest lease end a batch still waits for results. A
// result that comes later than that is dropped: the attempt has already
// been, or is about to be, rescued as `unknown`.
constexpr std::chrono::milliseconds async_result_wait_margin{5'000};

}  // namespace

// ---------------------------------------------------------------- the batch

AsyncBatch::AsyncBatch(std::atomic<std::int64_t>& in_flight, std::size_t capacity)
    : in_flight_(in_flight), capacity_(capacity), inbox_(std::make_shared<Inbox>()) {
  inbox_->arrivals.reserve(capacity);
  inbox_->delivered.assign(capacity, 0);
  slots_.reserve(capacity);
}

AsyncBatch::~AsyncBatch() { in_flight_ -= static_cast<std::int64_t>(pending()); }

HandlerCallback AsyncBatch::add(const ClaimedTask& claimed, const HandlerEntry& entry) {
  if (slots_.size() >= capacity_) throw std::logic_error("more asynchronous attempts than the batch holds");
  const std::size_t index = slots_.size();
  slots_.push_back(Slot{&claimed, entry, Clock::now(), false});
  ++in_flight_;
  return [inbox = inbox_, index](HandlerResult result) {
    {
      std::lock_guard<std::mutex> guard(inbox->mutex);
      if (inbox->delivered[index] != 0) return;
      inbox->delivered[index] = 1;
      inbox->arrivals.push_back(Arrival{index, std::move(result), Clock::now()});
    }
    inbox->cv.notify_all();
  };
}

std::optional<AsyncBatch::Arrival> AsyncBatch::next(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(inbox_->mutex);
  const bool arrived =
      inbox_->cv.wait_until(lock, deadline, [&] { return inbox_->taken < inbox_->arrivals.size(); });
  if (!arrived) return std::nullopt;
  return std::move(inbox_->arrivals[inbox_->taken++]);
}

void AsyncBatch::recorded(std::size_t index) {
  Slot& s = slots_.at(index);
  if (s.recorded) throw std::logic_error("an asynchronous attempt was recorded twice");
  s.recorded = true;
  ++recorded_count_;
  --in_flight_;
}

AsyncBatch::Clock::time_point AsyncBatch::deadline() const {
  Clock::time_point latest = Clock::now();
  for (const Slot& s : slots_) {
    if (s.recorded) continue;
    latest = std::max(latest, s.claimed->claimed_at + std::chrono::milliseconds(s.claimed->task.timeout_ms));
  }
  return latest + async_result_wait_margin;
}

// ---------------------------------------------------------------- the worker's side

// A handler that throws here started nothing (its contract), so the
// attempt is a `retry`, exactly like a synchronous handler's exception.
void ClaimLoop::async_start(ThreadConnection& connection, AsyncBatch& async, const ClaimedTask& claimed,
                         const HandlerEntry& entry) {
  HandlerCallback done = async.add(claimed, entry);
  ++counters_.async_started;
  std::string error;
  try {
    worker_tracing::attempt_run(claimed.task, options_.worker_id, [&] {
      entry.handler->handle_async(claimed.task, context_for(connection, claimed.task), done);
    });
    return;
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "handler threw a non-standard exception";
  }
  done(handler_exception_result(claimed.task, error));
}

// Records results in the order they arrive. An attempt whose result has not
// come by the deadline is left `running`: its lease runs out and maintenance
// records it as `unknown` (retried with the same idempotency key, never
// compensated), which is what an attempt with no known result is.
void ClaimLoop::async_finish(ThreadConnection& connection, AsyncBatch& async, Pending& pending) {
  while (async.pending() > 0) {
    std::optional<AsyncBatch::Arrival> arrival = async.next(async.deadline());
    if (!arrival) break;
    const AsyncBatch::Slot& s = async.slot(arrival->slot);
    result_record(connection, s.claimed->task, arrival->result, s.entry.backoff, s.entry.batched_completion,
                  arrival->at - s.started, pending);
    due_hand_in(pending);
    async.recorded(arrival->slot);
  }
  for (std::size_t i = 0; i < async.size(); ++i) {
    const AsyncBatch::Slot& s = async.slot(i);
    if (s.recorded) continue;
    ++counters_.async_abandoned;
    worker_tracing::attempt_abandoned(s.claimed->task);
    nlohmann::json fields = {{"task_id", s.claimed->task.id}, {"kind", s.claimed->task.kind},
                             {"queue", s.claimed->task.queue}, {"attempt", s.claimed->task.attempt}};
    log_.write("error", "task_async_abandoned", fields);
  }
}

}  // namespace payq
