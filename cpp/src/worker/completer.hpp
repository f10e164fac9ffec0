// The completer: records the outcomes of a worker's claiming threads,
// grouping what several threads hand in at about the same moment into one
// transaction (group commit). A claiming thread hands an outcome in as soon
// as its handler returned and goes on with the next task of its batch; it
// waits for its outcomes to be committed before it claims again (and
// before it gives tasks back). A task counts as done, in the counters and
// the log, only once its outcome is durable. Completer threads of the
// worker (serve) write the groups on connections of their own; a waiting
// thread writes one itself when a writer's place is free, so nothing
// handed in is ever stranded (at stop, or without completer threads).
//
// Each task stays fenced by its lease token and atomic with its settlement:
// successes without settlement are one fenced statement for the whole group
// (a task whose lease is gone is simply not matched), every other outcome
// runs inside a savepoint of its own, so one task's failure neither undoes
// nor blocks another's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "payq/connection.hpp"
#include "payq/handler.hpp"
#include "payq/outbox.hpp"

namespace payq {

// Outcomes written by one group transaction at most, and group
// transactions being written at once by one worker (the completer threads'
// count): two let one group execute while the other's commit reaches the
// disk.
inline constexpr std::size_t completer_group_count_max = complete_batch_count_max;
inline constexpr int completer_writer_count_max = 2;
// How often an idle completer thread looks whether the worker stops.
inline constexpr std::chrono::milliseconds completer_idle_wait{100};

// One outcome to record, and what became of it.
struct CompletionEntry {
  enum class Status {
    waiting,         // not written yet
    completed,       // committed: `completion` says how the task ended
    lease_lost,      // the task no longer runs under this lease: nothing written
    failed,          // not recorded (`error`): the lease expiry records the attempt as unknown
    commit_unknown,  // the commit's fate is unknown (`error`): maintenance resolves it
  };

  const Task* task = nullptr;  // the claimed task (its lease token fences the write)
  Outcome outcome;
  BackoffPolicy backoff;
  std::int64_t duration_ms = 0;
  bool batched = false;  // a success of a batched_completion kind (counted as such)

  Status status = Status::waiting;
  Completion completion;
  std::string error;
  // Set, under the completer's lock, once `status` is final; read by the
  // thread that handed the entry in under the same lock.
  bool decided = false;
};

class Completer {
 public:
  Completer(std::string worker_id, int transient_retry_count_max);
  Completer(const Completer&) = delete;
  Completer& operator=(const Completer&) = delete;

  // Hands entries[0, count) in for writing; returns at once. They must
  // stay in place until wait() says they are decided.
  void hand_in(CompletionEntry* entries, std::size_t count);
  // Returns once entries[0, count) (handed in) are decided. `connection` is
  // the calling thread's: it writes a group itself (its own entries or
  // others') when a writer's place is free.
  void wait(CompletionEntry* entries, std::size_t count, const std::function<Connection&()>& connection);
  // Whether the entry is decided, without waiting.
  bool decided(const CompletionEntry& entry);

  // A completer thread: writes groups on `connection` as entries come in,
  // until `stopping()` and nothing is left to write.
  void serve(const std::function<Connection&()>& connection, const std::function<bool()>& stopping);

  // Writes one group in one transaction on `connection`, setting every
  // entry's status; never throws for a database failure (the entries say
  // it). Public for tests.
  void group_write(Connection& connection, const std::vector<CompletionEntry*>& group);

 private:
  // Successes without settlement, alone (one statement, its own
  // transaction) or inside the group's transaction.
  void successes_write(Executor& executor, const std::vector<CompletionEntry*>& successes);
  void others_write(Transaction& tx, const std::vector<CompletionEntry*>& others, bool savepoints);
  void group_failed(const std::vector<CompletionEntry*>& group, CompletionEntry::Status status,
                    const std::string& error);
  // A group whose successes' statement refused its input: each entry alone.
  void group_write_one_by_one(Connection& connection, const std::vector<CompletionEntry*>& group);

  const std::string worker_id_;
  const int transient_retry_count_max_;

  // Takes a group from waiting_ (lock held), writes it unlocked and marks
  // it decided; rethrows a broken invariant after the group is marked.
  void group_take_and_write(std::unique_lock<std::mutex>& lock, const std::function<Connection&()>& connection);

  std::mutex mutex_;
  std::condition_variable written_;   // a group was decided
  std::condition_variable arrived_;   // entries were handed in
  std::vector<CompletionEntry*> waiting_;  // handed in, not yet taken by a writer
  int writer_count_ = 0;
};

// Whether a success needs nothing but its state change (no hold to capture,
// no reversal or follow-up): such successes share one fenced statement.
bool success_settles_nothing(const Task& task, const Outcome& outcome);

}  // namespace payq
