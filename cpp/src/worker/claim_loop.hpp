// The claim loop: what each claiming thread runs. A thread owns one
// connection, claims a batch from a queue picked by weight, runs the
// handlers (asynchronous ones all at once, claim_async.hpp) and records each
// outcome with a fenced completion. One ClaimLoop serves all the threads of
// a worker; its state is the database outage they share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "payq/database.hpp"
#include "payq/handler.hpp"
#include "payq/outbox.hpp"
#include "worker/reconnect_policy.hpp"
#include "worker/worker_internal.hpp"

namespace payq {

// After a claim or connection failure a thread waits before it claims
// again; shorter than the listener's and maintenance's, since claiming is
// the work itself.
inline constexpr ReconnectPolicy claim_reconnect_default{std::chrono::milliseconds{100},
                                                         std::chrono::milliseconds{10'000}};

struct ClaimLoopOptions {
  std::vector<std::pair<std::string, int>> queues{{"default", 1}};
  std::size_t claim_batch_count_max = 10;
  std::chrono::milliseconds poll_interval{1000};
  // The completions' worker id: 1 to worker_id_bytes_max bytes.
  std::string worker_id;
  ReconnectPolicy reconnect = claim_reconnect_default;

  // Throws InvalidArgument naming the first bad field.
  void validate() const;
};

// A task as claimed, with the moment of its claim (its lease started then).
struct ClaimedTask {
  Task task;
  std::chrono::steady_clock::time_point claimed_at;
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

class AsyncBatch;

class ClaimLoop {
 public:
  // Validates the options; the references must outlive this object.
  ClaimLoop(Database& database, HandlerRegistry& registry, ClaimLoopOptions options, StopSignal& stop,
            WakeTokens& wake, WorkerLog& log, WorkerCounters& counters);

  // Claims and runs tasks until stop (claiming thread `thread_index`).
  // Database failures are waited out; only a broken invariant escapes.
  void run(int thread_index);

 private:
  // The thread's connection: acquired on first use, dropped when it broke
  // so the next use acquires a fresh one.
  class ThreadConnection {
   public:
    explicit ThreadConnection(Database& database) : database_(database) {}
    Connection& get();
    void drop_if_broken();

   private:
    Database& database_;
    std::optional<Database::Lease> lease_;
  };

  // A success of a batched_completion kind, waiting for the batch's flush.
  // `task` points into the batch being run, which outlives the queue.
  struct QueuedSuccess {
    const Task* task;
    std::string result_json;
    std::int64_t duration_ms;
  };

  std::vector<ClaimedTask> claim_round(Connection& connection, QueuePicker& picker);
  void batch_run(ThreadConnection& connection, std::vector<ClaimedTask>& batch);
  void task_run(ThreadConnection& connection, const ClaimedTask& claimed, const std::optional<HandlerEntry>& entry,
                std::vector<QueuedSuccess>& queued);
  // Records what a handler reported (pause, outcome or nothing), shared by
  // the synchronous and the asynchronous path.
  void result_record(ThreadConnection& connection, const Task& task, HandlerResult& result,
                     const BackoffPolicy& backoff, bool batched, std::chrono::steady_clock::duration duration,
                     std::vector<QueuedSuccess>& queued);
  void successes_flush(ThreadConnection& connection, std::vector<QueuedSuccess>& queued);
  TaskContext context_for(ThreadConnection& connection, const Task& task);
  HandlerResult handler_call(Handler& handler, const Task& task, const TaskContext& context);
  HandlerResult handler_exception_result(const Task& task, const std::string& error);
  void queue_pause(ThreadConnection& connection, const Task& task, std::int64_t pause_ms);
  void task_complete(ThreadConnection& connection, const Task& task, const Outcome& outcome,
                     const BackoffPolicy& backoff, std::int64_t duration_ms);
  void task_give_back(ThreadConnection& connection, const Task& task, const char* reason);
  void outcome_count(OutcomeKind kind);

  // claim_async.cpp: asynchronous handlers.
  void async_start(ThreadConnection& connection, AsyncBatch& async, const ClaimedTask& claimed,
                   const HandlerEntry& entry);
  void async_finish(ThreadConnection& connection, AsyncBatch& async, std::vector<QueuedSuccess>& queued);

  // The database as the claiming threads last found it: an outage is
  // logged once when it starts and once when it ends, however many threads
  // and retries see it.
  void database_failed(int thread_index, const char* error) noexcept;
  void database_reached() noexcept;

  Database& database_;
  HandlerRegistry& registry_;
  ClaimLoopOptions options_;
  StopSignal& stop_;
  WakeTokens& wake_;
  WorkerLog& log_;
  WorkerCounters& counters_;
  std::atomic<bool> database_unavailable_{false};
  std::atomic<std::int64_t> database_unavailable_since_ms_{0};
};

}  // namespace payq
