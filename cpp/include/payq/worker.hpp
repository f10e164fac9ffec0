// The worker engine: threads that claim tasks from weighted queues, run their
// handlers and record the outcomes; a listener that wakes idle threads on
// NOTIFY; and maintenance (lease rescue, hold expiry, pruning, inbox pruning,
// cron) run by one elected worker at a time. No Python here: the binding
// wraps Python callables into Handlers.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "payq/connection.hpp"
#include "payq/database.hpp"
#include "payq/handler.hpp"
#include "payq/outbox.hpp"

namespace payq {

// Bounds, named once.
inline constexpr int worker_concurrency_max = 256;
inline constexpr int worker_queue_count_max = 64;
inline constexpr int worker_queue_weight_max = 1000;  // as the queue table's CHECK
inline constexpr std::chrono::milliseconds worker_poll_interval_min{10};
inline constexpr std::chrono::milliseconds worker_poll_interval_max{3'600'000};
inline constexpr std::chrono::milliseconds worker_shutdown_grace_max{3'600'000};
inline constexpr std::chrono::milliseconds worker_maintenance_interval_min{10};
inline constexpr std::chrono::milliseconds worker_maintenance_interval_max{3'600'000};
inline constexpr std::int64_t worker_maintenance_batch_count_max = 100'000;
inline constexpr std::int64_t worker_prune_after_ms_min = 0;

struct WorkerOptions {
  // Queues served, each with a weight: a queue of weight 3 gets three claim
  // turns for every turn of a queue of weight 1 (smooth weighted
  // round-robin), and an empty queue gives its turn to the next one.
  std::vector<std::pair<std::string, int>> queues{{"default", 1}};
  // Claiming threads, each with a connection of its own.
  int concurrency = 4;
  // Tasks claimed per claim by one thread; it runs them one after another,
  // so keep this times a task's duration well below the task's timeout.
  // Tasks of asynchronous handlers (the HTTP handler) are all started at
  // once instead, so for them this is the calls in flight per thread.
  std::size_t claim_batch_count_max = 10;
  // An idle thread claims again after this long even without a NOTIFY.
  std::chrono::milliseconds poll_interval{1000};
  // On stop, in-flight handlers get this long to finish before the worker
  // logs `shutdown_grace_exceeded` (it still waits for them: a running
  // handler cannot be abandoned safely; its lease expiry covers a kill).
  std::chrono::milliseconds shutdown_grace{30'000};
  // Default: "<host>:<pid>:<random hex>".
  std::string worker_id;
  // LISTEN for enqueue notifications (see notify_queue); polling remains.
  bool listen = true;
  // Take part in the maintenance election.
  bool maintenance = true;
  std::chrono::milliseconds maintenance_interval{1000};
  // Rows handled per maintenance step and tick.
  std::int64_t maintenance_batch_count_max = 1000;
  // Finished tasks older than this are pruned.
  std::int64_t prune_after_ms = 7LL * 24 * 3600 * 1000;
  // Provider callbacks (the inbox) older than this are pruned. Far longer
  // than task rows: a provider re-sending an old notification must still be
  // recognised as a duplicate.
  std::int64_t inbox_retention_ms = 180LL * 24 * 3600 * 1000;
  // Enqueue the due slots of the cron entries (Outbox::cron_set) at every
  // maintenance tick of the leader; each slot fires once across workers.
  bool cron = true;
  // Runs in a transaction of its own at every maintenance tick of the
  // leader, after the built-in services (lease rescue, hold expiry, pruning,
  // inbox pruning, cron).
  std::function<void(Transaction&)> maintenance_extra;
  // Receives one JSON object per line (without the newline). Calls are
  // serialised by the worker and may happen while it holds an internal
  // lock, so a sink must be quick and must not call back into the worker.
  // (A binding whose sink takes the GIL must release the GIL around every
  // Worker method.) Default: stderr.
  std::function<void(const std::string&)> log_sink;
  // Also log debug events (a thread going idle, a busy maintenance lock).
  bool log_debug = false;
};

// Throws InvalidArgument naming the first bad field.
void worker_options_validate(const WorkerOptions& options);

// Counters since start, for metrics.
// Upper bounds (milliseconds) of the attempt-duration histogram's buckets;
// one more bucket above the last catches everything longer.
inline constexpr std::array<std::int64_t, 12> attempt_duration_bounds_ms{5,   10,   25,   50,   100,  250,
                                                                         500, 1000, 2500, 5000, 10000, 30000};
// The same bounds in seconds, as Prometheus wants them.
inline constexpr std::array<double, attempt_duration_bounds_ms.size()> attempt_duration_bounds_seconds{
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0};

struct WorkerStats {
  std::int64_t claimed = 0;
  std::int64_t succeeded = 0;
  std::int64_t retried = 0;
  std::int64_t failed = 0;    // the `fail` outcome, unknown kinds included
  std::int64_t unknown = 0;   // the `unknown` outcome
  std::int64_t unknown_kind = 0;
  std::int64_t handler_exceptions = 0;
  std::int64_t completed_by_handler = 0;
  std::int64_t batched_completions = 0;  // successes recorded by a batch completion (also in `succeeded`)
  std::int64_t async_started = 0;        // attempts started through Handler::handle_async
  std::int64_t async_abandoned = 0;      // asynchronous attempts whose result never came within their lease
  std::int64_t queue_pauses = 0;         // back-pressure pauses written (HandlerResult::queue_pause_ms)
  std::int64_t lease_lost = 0;
  std::int64_t given_back = 0;
  std::int64_t complete_errors = 0;  // completion not recorded (database error)
  std::int64_t database_errors = 0;  // claim or connection failures
  std::int64_t in_flight = 0;
  std::int64_t maintenance_ticks = 0;
  bool maintenance_leader = false;
  // What this worker's maintenance did while it was the leader.
  std::int64_t leases_rescued = 0;
  std::int64_t holds_expired = 0;
  std::int64_t tasks_pruned = 0;
  std::int64_t inbox_events_pruned = 0;
  std::int64_t cron_tasks_enqueued = 0;
  // Handler durations of the attempts this worker finished: the count per
  // bucket of attempt_duration_bounds_seconds (not cumulative; a duration
  // equal to a bound is in that bound's bucket; the last entry is the bucket
  // above the last bound), and their sum, measured to the nanosecond.
  std::vector<std::int64_t> attempt_duration_counts;
  double attempt_duration_seconds_sum = 0;
  // Deprecated: the sum in whole milliseconds (each attempt truncated), kept
  // until the metrics exporter reads attempt_duration_seconds_sum.
  std::int64_t attempt_duration_ms_sum = 0;
};

class Worker {
 public:
  // Validates the options; `database` and `registry` must outlive the worker.
  Worker(Database& database, HandlerRegistry& registry, WorkerOptions options);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  // Stops and joins if still running.
  ~Worker();

  // start(), then blocks until stop is requested and shutdown is complete.
  // Rethrows the first fatal error of a worker thread (a broken invariant).
  void run();
  // Starts the threads and returns. Throws InvalidState if already started.
  void start();
  // Asks the threads to stop claiming; returns at once (for signal-driven
  // shutdown, where run() does the waiting).
  void request_stop() noexcept;
  // Graceful: stop claiming, let in-flight handlers finish (see
  // shutdown_grace), give back claimed tasks not yet started, and join.
  // Blocks until done; safe to call more than once and from any thread but
  // the worker's own (a handler calls request_stop(); stop() throws
  // InvalidState there).
  void stop();

  // True once stop was requested, also when the worker stopped itself after
  // a fatal thread error (which stop() then rethrows).
  bool stop_requested() const noexcept;
  // Waits until stop is requested or the timeout passes; returns whether
  // stop was requested. A binding runs start() and then this in short
  // slices, checking for signals (Python's SIGTERM handler) in between,
  // followed by stop().
  bool stop_wait_for(std::chrono::milliseconds timeout);
  WorkerStats stats() const;
  const WorkerOptions& options() const noexcept { return options_; }
  const std::string& worker_id() const noexcept { return options_.worker_id; }

 private:
  // The parts (claim loop, listener, maintenance) and what they share;
  // defined in worker.cpp.
  struct Parts;

  void thread_fatal(const char* thread_name) noexcept;
  void shutdown_wait();

  Database& database_;
  WorkerOptions options_;
  std::unique_ptr<Parts> parts_;

  std::mutex lifecycle_mutex_;
  std::condition_variable lifecycle_cv_;
  bool started_ = false;
  bool joining_ = false;
  bool joined_ = false;
  int threads_running_ = 0;
  std::exception_ptr fatal_error_;
  std::vector<std::thread> threads_;
};

// The NOTIFY channel of a schema: "payq_<schema>", shortened with a hash when
// that would exceed PostgreSQL's 63-byte identifier limit.
std::string queue_notify_channel(const std::string& schema);

// Wakes idle workers serving `queue`: pg_notify on the schema's channel with
// the queue name as payload, in a short transaction of its own. Call it after
// the enqueueing transaction committed, never inside it (a NOTIFY inside the
// business transaction would serialise every commit on the notify queue
// lock). A lost notification only costs latency: workers also poll.
void notify_queue(Database& database, const std::string& queue);

}  // namespace payq
