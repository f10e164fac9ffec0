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
#include "worker/completer.hpp"
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
  // A completer thread (completer.hpp), on a connection of its own, until
  // stop and nothing is left to write.
  void complete_serve();

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

  // cursors: the thread's ClaimCursor of each queue, in options_.queues order.
  std::vector<ClaimedTask> claim_round(Connection& connection, QueuePicker& picker, std::vector<ClaimCursor>& cursors);

  // The outcomes of a batch not yet recorded, each handed to the completer
  // as soon as the handler call that produced it returned; the batch is
  // settled (waited for, logged) after the thread's next claim. Reserved to
  // the batch's size (one entry per task at most), so entries handed in
  // never move; `task` of each points into the batch, which outlives them.
  struct Pending {
    std::vector<CompletionEntry> due;
    std::size_t due_handed = 0;  // due[0, due_handed) were handed in
    std::size_t due_logged = 0;  // due[0, due_logged) are decided and logged
  };
  // Runs the batch and hands every outcome in; due_settle() waits for them.
  void batch_run(ThreadConnection& connection, std::vector<ClaimedTask>& batch, Pending& pending);
  void task_run(ThreadConnection& connection, const ClaimedTask& claimed, const std::optional<HandlerEntry>& entry,
                Pending& pending);
  // Runs batch[first, end) (tasks of one batch-capable handler) in one call;
  // returns the index after the last task it ran.
  std::size_t run_many(ThreadConnection& connection, std::vector<ClaimedTask>& batch, std::size_t first,
                       std::size_t end, const HandlerEntry& entry, Pending& pending);
  // Files what a handler reported (pause, outcome or nothing) into
  // `pending`, shared by the synchronous and the asynchronous path.
  void result_record(ThreadConnection& connection, const Task& task, HandlerResult& result,
                     const BackoffPolicy& backoff, bool batched, std::chrono::steady_clock::duration duration,
                     Pending& pending);
  // Hands the new `due` entries in and logs those already decided.
  void due_hand_in(Pending& pending);
  // Waits until every `due` entry is decided, logs them, and empties `due`.
  void due_settle(ThreadConnection& connection, Pending& pending);
  void entry_log(const CompletionEntry& entry);
  TaskContext context_for(ThreadConnection& connection, const Task& task);
  HandlerResult handler_call(Handler& handler, const Task& task, const TaskContext& context);
  HandlerResult handler_exception_result(const Task& task, const std::string& error);
  void queue_pause(ThreadConnection& connection, const Task& task, std::int64_t pause_ms);
  void task_give_back(ThreadConnection& connection, const Task& task, const char* reason);
  bool lease_headroom_left(const ClaimedTask& claimed) const;
  void outcome_count(OutcomeKind kind);

  // claim_async.cpp: asynchronous handlers.
  void async_start(ThreadConnection& connection, AsyncBatch& async, const ClaimedTask& claimed,
                   const HandlerEntry& entry);
  void async_finish(ThreadConnection& connection, AsyncBatch& async, Pending& pending);

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
  Completer completer_;
  std::atomic<bool> database_unavailable_{false};
  std::atomic<std::int64_t> database_unavailable_since_ms_{0};
};

}  // namespace payq
