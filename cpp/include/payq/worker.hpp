// The worker engine: threads that claim tasks from weighted queues, run their
// handlers and record the outcomes; a listener that wakes idle threads on
// NOTIFY; and maintenance (lease rescue, hold expiry, pruning) run by one
// elected worker at a time. No Python here: the binding wraps Python
// callables into Handlers.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "payq/connection.hpp"
#include "payq/database.hpp"
#include "payq/handler.hpp"
#include "payq/outbox.hpp"

namespace payq {

// Bounds, named once.
inline constexpr int worker_concurrency_max = 256;
inline constexpr int worker_queue_count_max = 64;
inline constexpr int worker_queue_weight_max = 1000;  // as the queue table's CHECK
inline constexpr std::size_t worker_id_bytes_max = 200;
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
  // Runs in a transaction of its own at every maintenance tick of the
  // leader, after the built-in steps (cron firing will hook in here).
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
  // Handler durations of the attempts this worker finished: the count per
  // bucket of attempt_duration_bounds_ms (not cumulative; the last entry is
  // the bucket above the last bound), and their sum.
  std::vector<std::int64_t> attempt_duration_counts;
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

  bool stop_requested() const noexcept { return stopping_.load(); }
  // Waits until stop is requested or the timeout passes; returns whether
  // stop was requested. A binding runs start() and then this in short
  // slices, checking for signals (Python's SIGTERM handler) in between,
  // followed by stop().
  bool stop_wait_for(std::chrono::milliseconds timeout);
  WorkerStats stats() const;
  const WorkerOptions& options() const noexcept { return options_; }
  const std::string& worker_id() const noexcept { return options_.worker_id; }

 private:
  struct Counters {
    std::atomic<std::int64_t> claimed{0}, succeeded{0}, retried{0}, failed{0}, unknown{0}, unknown_kind{0},
        handler_exceptions{0}, completed_by_handler{0}, batched_completions{0}, async_started{0},
        async_abandoned{0}, queue_pauses{0}, lease_lost{0}, given_back{0}, complete_errors{0}, database_errors{0},
        in_flight{0}, maintenance_ticks{0}, leases_rescued{0}, holds_expired{0}, tasks_pruned{0}, inbox_events_pruned{0},
        attempt_duration_ms_sum{0};
    std::array<std::atomic<std::int64_t>, attempt_duration_bounds_ms.size() + 1> attempt_duration_counts{};
    std::atomic<bool> maintenance_leader{false};
  };

  void attempt_duration_observe(std::int64_t duration_ms) noexcept;

  struct ClaimedTask {
    Task task;
    std::chrono::steady_clock::time_point claimed_at;
  };

  // A success of a batched_completion kind, waiting for the batch's flush.
  // `task` points into the batch being run, which outlives the queue.
  struct QueuedSuccess {
    const Task* task;
    std::string result_json;
    std::int64_t duration_ms;
  };

  // Smooth weighted round-robin over the served queues (one per thread).
  class QueuePicker {
   public:
    explicit QueuePicker(const std::vector<std::pair<std::string, int>>& queues);
    std::size_t next();

   private:
    std::vector<int> weights_;
    std::vector<int> current_;
    int weight_total_ = 0;
  };

  // A claiming thread's own connection (worker.cpp).
  class ThreadConnection;
  // The asynchronous attempts of one batch, awaiting their results
  // (worker_async.cpp).
  class AsyncBatch;

  // worker.cpp: the claiming threads.
  void claimer_run(int index) noexcept;
  void claimer_loop(int index);
  std::vector<ClaimedTask> claim_round(Connection& connection, QueuePicker& picker);
  void batch_run(ThreadConnection& connection, std::vector<ClaimedTask>& batch);
  void task_run(ThreadConnection& connection, const ClaimedTask& claimed, const std::optional<HandlerEntry>& entry,
                std::vector<QueuedSuccess>& queued);
  // Records what a handler reported (pause, outcome or nothing), shared by
  // the synchronous and the asynchronous path.
  void result_record(ThreadConnection& connection, const Task& task, HandlerResult& result,
                     const BackoffPolicy& backoff, bool batched, std::int64_t duration_ms,
                     std::vector<QueuedSuccess>& queued);
  void successes_flush(ThreadConnection& connection, std::vector<QueuedSuccess>& queued);
  TaskContext context_for(ThreadConnection& connection, const Task& task);
  HandlerResult handler_call(Handler& handler, const Task& task, const TaskContext& context);
  HandlerResult handler_exception_result(const Task& task, const std::string& error);
  void queue_pause(ThreadConnection& connection, const Task& task, std::int64_t pause_ms);

  // worker_async.cpp: asynchronous handlers.
  void async_start(ThreadConnection& connection, AsyncBatch& async, const ClaimedTask& claimed,
                   const HandlerEntry& entry);
  void async_finish(ThreadConnection& connection, AsyncBatch& async, std::vector<QueuedSuccess>& queued);
  void task_complete(ThreadConnection& connection, const Task& task, const Outcome& outcome,
                     const BackoffPolicy& backoff, std::int64_t duration_ms);
  void task_give_back(ThreadConnection& connection, const Task& task, const char* reason);
  void outcome_count(OutcomeKind kind);
  void thread_fatal(const char* thread_name) noexcept;
  void shutdown_wait();

  // Waiting and waking. A wake token stands for "there may be work": the
  // listener adds one per notification, a thread that claimed a full batch
  // adds one for a colleague. Tokens are capped at `concurrency`.
  void wake(int token_count);
  // Waits until a token, stop, or the timeout; consumes a token if there was one.
  void idle_wait(int thread_index, std::chrono::milliseconds timeout);

  // worker_listener.cpp
  void listener_run() noexcept;
  void listener_session(int& failure_count);

  // worker_maintenance.cpp
  void maintenance_run() noexcept;
  void maintenance_session(int& failure_count);
  // Takes or renews the maintenance lease; whether this worker holds it.
  bool maintenance_lease_take(Connection& connection);
  void maintenance_lease_give_up(Connection& connection) noexcept;
  bool maintenance_tick(Connection& connection);

  // worker_log.cpp: one JSON object per line; `fields` is a JSON object.
  void log(const char* level, const char* event, const nlohmann::json& fields) noexcept;
  bool log_debug_enabled() const noexcept { return options_.log_debug; }

  Database& database_;
  HandlerRegistry& registry_;
  WorkerOptions options_;

  Counters counters_;
  std::atomic<bool> stopping_{false};
  // The database as the claiming threads last found it: an outage is logged
  // once when it starts and once when it ends, however many threads and
  // retries see it.
  std::atomic<bool> database_unavailable_{false};
  std::atomic<std::int64_t> database_unavailable_since_ms_{0};
  void database_failed(int thread_index, const char* error) noexcept;
  void database_reached() noexcept;

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  int wake_tokens_ = 0;

  std::mutex lifecycle_mutex_;
  std::condition_variable lifecycle_cv_;
  bool started_ = false;
  bool joining_ = false;
  bool joined_ = false;
  int threads_running_ = 0;
  std::exception_ptr fatal_error_;
  std::vector<std::thread> threads_;

  std::mutex log_mutex_;
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
