// The completer (completer.hpp): group commit of the claiming threads'
// outcomes.
#include "worker/completer.hpp"

#include <algorithm>
#include <exception>
#include <set>
#include <stdexcept>
#include <utility>

#include "payq/database.hpp"
#include "payq/error.hpp"
#include "worker/worker_tracing.hpp"

namespace payq {
namespace {

std::string lease_lost_text(const Task& task) {
  return "task " + std::to_string(task.id) + " is no longer running under lease " +
         std::to_string(*task.lease_token);
}

CompleteRequest request_for(const CompletionEntry& entry, const std::string& worker_id) {
  CompleteRequest request;
  request.task_id = entry.task->id;
  request.lease_token = *entry.task->lease_token;
  request.attempt = entry.task->attempt;
  request.outcome = entry.outcome;
  request.worker_id = worker_id;
  request.duration_ms = entry.duration_ms;
  request.backoff = entry.backoff;
  return request;
}

// Errors after which the group's transaction is gone: the whole group is
// run again (transact_on) or reported as not recorded.
bool transaction_lost(const Error& e) {
  return dynamic_cast<const TransientError*>(&e) != nullptr || dynamic_cast<const ConnectionLost*>(&e) != nullptr ||
         dynamic_cast<const CommitUnknown*>(&e) != nullptr;
}

}  // namespace

bool success_settles_nothing(const Task& task, const Outcome& outcome) {
  const Settlement& s = task.settlement;
  return outcome.kind == OutcomeKind::success && !s.hold_id && !s.reverse_transaction_id && !s.followup_json;
}

Completer::Completer(std::string worker_id, int transient_retry_count_max)
    : worker_id_(std::move(worker_id)), transient_retry_count_max_(transient_retry_count_max) {}

void Completer::hand_in(CompletionEntry* entries, std::size_t count) {
  if (count == 0) return;
  if (count > completer_group_count_max) {
    throw std::logic_error("more outcomes handed to the completer at once than one group holds");
  }
  {
    std::lock_guard<std::mutex> guard(mutex_);
    for (std::size_t i = 0; i < count; ++i) {
      entries[i].status = CompletionEntry::Status::waiting;
      entries[i].decided = false;
      waiting_.push_back(&entries[i]);
    }
  }
  arrived_.notify_one();
}

void Completer::wait(CompletionEntry* entries, std::size_t count, const std::function<Connection&()>& connection) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto all_decided = [&] {
    for (std::size_t i = 0; i < count; ++i) {
      if (!entries[i].decided) return false;
    }
    return true;
  };
  // Bounded: each pass writes a group (taking at least one waiting entry;
  // entries are only added by threads that then wait for them) or waits
  // for a writer, whose group write ends after its bounded retries.
  while (!all_decided()) {
    if (writer_count_ < completer_writer_count_max && !waiting_.empty()) {
      group_take_and_write(lock, connection);
    } else {
      written_.wait(lock);
    }
  }
}

bool Completer::decided(const CompletionEntry& entry) {
  std::lock_guard<std::mutex> guard(mutex_);
  return entry.decided;
}

void Completer::serve(const std::function<Connection&()>& connection, const std::function<bool()>& stopping) {
  std::unique_lock<std::mutex> lock(mutex_);
  // Bounded by stop: every pass writes a group or waits at most
  // completer_idle_wait; once stopping, it ends as soon as nothing waits.
  while (true) {
    if (writer_count_ < completer_writer_count_max && !waiting_.empty()) {
      group_take_and_write(lock, connection);
      continue;
    }
    if (waiting_.empty() && stopping()) return;
    arrived_.wait_for(lock, completer_idle_wait);
  }
}

void Completer::group_take_and_write(std::unique_lock<std::mutex>& lock,
                                     const std::function<Connection&()>& connection) {
  const std::size_t take = std::min(waiting_.size(), completer_group_count_max);
  std::vector<CompletionEntry*> group(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(take));
  waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(take));
  ++writer_count_;
  lock.unlock();
  std::exception_ptr broken;
  try {
    group_write(connection(), group);
  } catch (const Error& e) {
    // Only acquiring a connection throws a payq::Error here.
    group_failed(group, CompletionEntry::Status::failed, e.what());
  } catch (...) {
    // A broken invariant: the waiting threads still get their entries back.
    group_failed(group, CompletionEntry::Status::failed, "the completer failed");
    broken = std::current_exception();
  }
  lock.lock();
  for (CompletionEntry* entry : group) entry->decided = true;
  --writer_count_;
  written_.notify_all();
  // Another writer's place is free: a completer thread may take what came
  // in meanwhile.
  if (!waiting_.empty()) arrived_.notify_one();
  if (broken) std::rethrow_exception(broken);
}

void Completer::group_write(Connection& connection, const std::vector<CompletionEntry*>& group) {
  std::vector<CompletionEntry*> successes, others;
  for (CompletionEntry* entry : group) {
    (success_settles_nothing(*entry->task, entry->outcome) ? successes : others).push_back(entry);
  }
  try {
    if (others.empty()) {
      // One statement, run as its own transaction: no BEGIN and COMMIT
      // round trips.
      single_statement_on(connection, transient_retry_count_max_,
                          [&](SingleStatement& alone) { successes_write(alone, successes); });
    } else {
      const bool savepoints = group.size() > 1;
      transact_on(connection, transient_retry_count_max_, [&](Transaction& tx) {
        if (!successes.empty()) successes_write(tx, successes);
        others_write(tx, others, savepoints);
      });
    }
  } catch (const InvalidArgument& e) {
    // The successes' statement refused its input (a result that is not
    // JSON) before anything ran: then each outcome alone, where only the
    // bad one fails.
    if (group.size() == 1) {
      group_failed(group, CompletionEntry::Status::failed, e.what());
    } else {
      group_write_one_by_one(connection, group);
    }
  } catch (const CommitUnknown& e) {
    group_failed(group, CompletionEntry::Status::commit_unknown, e.what());
  } catch (const Error& e) {
    group_failed(group, CompletionEntry::Status::failed, e.what());
  }
}

void Completer::successes_write(Executor& executor, const std::vector<CompletionEntry*>& successes) {
  std::vector<BatchSuccess> items;
  items.reserve(successes.size());
  for (const CompletionEntry* entry : successes) {
    items.push_back(BatchSuccess{entry->task->id, *entry->task->lease_token, entry->outcome.result_json,
                                 entry->duration_ms});
  }
  const std::vector<std::int64_t> ids = Outbox(executor).complete_success_batch(items, worker_id_);
  const std::set<std::int64_t> done(ids.begin(), ids.end());
  for (CompletionEntry* entry : successes) {
    if (done.count(entry->task->id) != 0) {
      entry->status = CompletionEntry::Status::completed;
      entry->completion = Completion{};
      entry->completion.state = TaskState::succeeded;
    } else {
      entry->status = CompletionEntry::Status::lease_lost;
      entry->error = lease_lost_text(*entry->task);
    }
  }
}

// Each outcome in a savepoint of its own when the group holds more than
// one: a failure rolls back only that task's writes. An error that loses
// the transaction itself propagates, and the whole group is run again.
void Completer::others_write(Transaction& tx, const std::vector<CompletionEntry*>& others, bool savepoints) {
  for (CompletionEntry* entry : others) {
    const CompleteRequest request = request_for(*entry, worker_id_);
    worker_tracing::AttemptCurrent traced(*entry->task);  // the settlement's spans are the attempt's children
    if (!savepoints) {
      try {
        entry->completion = Outbox(tx).complete(request);
        entry->status = CompletionEntry::Status::completed;
      } catch (const LeaseLost& e) {
        // Nothing was written: the transaction goes on.
        entry->status = CompletionEntry::Status::lease_lost;
        entry->error = e.what();
      }
      continue;
    }
    Savepoint savepoint(tx);
    try {
      entry->completion = Outbox(tx).complete(request);
      savepoint.release();
      entry->status = CompletionEntry::Status::completed;
    } catch (const LeaseLost& e) {
      entry->status = CompletionEntry::Status::lease_lost;
      entry->error = e.what();
    } catch (const Error& e) {
      if (transaction_lost(e)) throw;
      entry->status = CompletionEntry::Status::failed;
      entry->error = e.what();
    }
  }
}

void Completer::group_failed(const std::vector<CompletionEntry*>& group, CompletionEntry::Status status,
                             const std::string& error) {
  for (CompletionEntry* entry : group) {
    entry->status = status;
    entry->error = error;
  }
}

void Completer::group_write_one_by_one(Connection& connection, const std::vector<CompletionEntry*>& group) {
  for (CompletionEntry* entry : group) group_write(connection, {entry});
}

}  // namespace payq
