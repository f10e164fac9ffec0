// The worker's spans (payq/tracing.hpp): one per claim that took tasks, and
// one per attempt, a child of the trace stored with the task at enqueue, so
// that one trace runs from the request that enqueued the work through every
// attempt (its handler's own spans, the provider's HTTP call) to the
// settlement. Private to the worker. With tracing off each hook is one
// branch.
//
// An attempt's span is opened when its handler starts it, kept by the
// task's lease token (unique per attempt) while the outcome waits to be
// recorded, made current again on whichever thread writes the outcome (so
// the settlement's spans are its children), and ended once the outcome's
// fate is known.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "payq/handler.hpp"
#include "payq/outbox.hpp"
#include "payq/tracing.hpp"
#include "worker/completer.hpp"

namespace payq::worker_tracing {

// Times a claim; record() makes its span only when the claim took tasks,
// so idle polling makes none. The span is a root of its own (its tasks
// belong to many traces); the attempts this thread then starts link to it.
class ClaimSpan {
 public:
  ClaimSpan() noexcept : start_unix_ns_(tracing::enabled() ? tracing::now_unix_ns() : 0) {}
  void record(const std::string& queue, std::size_t count, const std::string& worker_id) {
    if (start_unix_ns_ != 0) record_slow(queue, count, worker_id);
  }

 private:
  void record_slow(const std::string& queue, std::size_t count, const std::string& worker_id);
  std::int64_t start_unix_ns_;
};

// Opens the attempt span of a claimed task; nullptr when tracing is off or
// the tracer declined.
tracing::Span* attempt_open(const Task& task, const std::string& worker_id);

// Runs `start` (a handler call, or the start of an asynchronous one) with
// the task's attempt span opened and current on this thread, so the
// handler's own spans (a Python handler's, the HTTP handler's call) are
// its children.
template <typename Start>
decltype(auto) attempt_run(const Task& task, const std::string& worker_id, Start&& start) {
  tracing::Span* span = tracing::enabled() ? attempt_open(task, worker_id) : nullptr;
  if (span == nullptr) return start();
  tracing::Scope scope(*span);
  return start();
}

// The same for the tasks of one Handler::handle_many call: wraps the
// call's may_start and done so that each task's attempt span is opened
// when it may start and current until its result is handed over.
class ManyTraced {
 public:
  ManyTraced(TaskBatchCall& call, const std::string& worker_id);
  ~ManyTraced();
  ManyTraced(const ManyTraced&) = delete;
  ManyTraced& operator=(const ManyTraced&) = delete;

 private:
  bool active_ = false;
  tracing::Span* previous_ = nullptr;
};

// While it lives, the task's open attempt span (if any) is current on
// this thread: for the writer of the task's outcome.
class AttemptCurrent {
 public:
  explicit AttemptCurrent(const Task& task) noexcept;
  ~AttemptCurrent();
  AttemptCurrent(const AttemptCurrent&) = delete;
  AttemptCurrent& operator=(const AttemptCurrent&) = delete;

 private:
  bool active_ = false;
  tracing::Span* previous_ = nullptr;
};

// Ends the attempt span of an outcome whose fate is known: its outcome,
// the task's state after it, or why it was not recorded. An attempt that
// never opened a span (an unknown kind, tracing turned on meanwhile) gets
// one starting `duration_ms` ago.
void attempt_end(const CompletionEntry& entry);
// ... of an attempt whose handler completed the task itself.
void attempt_end_by_handler(const Task& task, std::chrono::steady_clock::duration duration);
// ... of an asynchronous attempt whose result never came within its lease.
void attempt_abandoned(const Task& task);

}  // namespace payq::worker_tracing
