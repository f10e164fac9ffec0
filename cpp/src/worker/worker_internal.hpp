// What the worker's parts (claim loop, listener, maintenance) share: the
// structured log, the stop signal, the wake tokens and the counters. Each
// part takes these by reference, so a test can run a part alone with its own.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "payq/worker.hpp"

namespace payq {

// The default sink: the line and a newline to stderr.
void worker_log_to_stderr(const std::string& line);

// One JSON object per line, to a sink; calls are serialised.
class WorkerLog {
 public:
  using Sink = std::function<void(const std::string&)>;
  // An empty sink writes to stderr.
  WorkerLog(std::string worker_id, Sink sink, bool debug);
  WorkerLog(const WorkerLog&) = delete;
  WorkerLog& operator=(const WorkerLog&) = delete;

  // `fields` is a JSON object; its keys ts, level, event and worker are
  // the record's own and are skipped. Never throws (worker_log.cpp).
  void write(const char* level, const char* event, const nlohmann::json& fields) noexcept;
  bool debug() const noexcept { return debug_; }

 private:
  std::string worker_id_;
  Sink sink_;
  bool debug_;
  std::mutex mutex_;
};

// Stop requested: a flag every loop checks, and a wait that ends with it.
class StopSignal {
 public:
  // Whether this call made the request (false if it was already made).
  bool request() noexcept;
  bool requested() const noexcept { return requested_.load(); }
  // Waits until stop is requested, however long that takes.
  void wait();
  // Waits until stop is requested or the timeout passes; whether it was.
  bool wait_for(std::chrono::milliseconds timeout);

 private:
  std::atomic<bool> requested_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
};

// A wake token stands for "there may be work": the listener adds one per
// notification, a thread that claimed a full batch adds one for a colleague,
// maintenance adds one per rescued task. Tokens are capped at `capacity`
// (the claiming thread count).
class WakeTokens {
 public:
  WakeTokens(int capacity, const StopSignal& stop) : capacity_(capacity), stop_(stop) {}
  void wake(int token_count);
  // Waits until a token, stop, or the timeout; consumes a token if there
  // was one and says so. `before_wait` runs under the token lock just before
  // a real wait (not when a token or stop is already there).
  bool idle_wait(std::chrono::milliseconds timeout, const std::function<void()>& before_wait);
  // Ends current waits: call after the stop signal was requested.
  void stop_notify();

 private:
  const int capacity_;
  const StopSignal& stop_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int tokens_ = 0;
};

// Counters since start; WorkerStats is their snapshot.
struct WorkerCounters {
  std::atomic<std::int64_t> claimed{0}, succeeded{0}, retried{0}, failed{0}, unknown{0}, unknown_kind{0},
      handler_exceptions{0}, completed_by_handler{0}, batched_completions{0}, async_started{0}, async_abandoned{0},
      queue_pauses{0}, lease_lost{0}, given_back{0}, complete_errors{0}, database_errors{0}, in_flight{0},
      maintenance_ticks{0}, leases_rescued{0}, holds_expired{0}, tasks_pruned{0}, inbox_events_pruned{0},
      cron_tasks_enqueued{0}, attempt_duration_ms_sum{0}, attempt_duration_ns_sum{0};
  std::array<std::atomic<std::int64_t>, attempt_duration_bounds_ms.size() + 1> attempt_duration_counts{};
  std::atomic<bool> maintenance_leader{false};

  // Bucketed and summed at full precision (worker.cpp).
  void attempt_duration_observe(std::chrono::nanoseconds duration) noexcept;
  WorkerStats snapshot() const;
};

}  // namespace payq
