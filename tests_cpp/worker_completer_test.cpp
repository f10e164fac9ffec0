// The completer (cpp/src/worker/completer.hpp): outcomes of several tasks
// written in one group transaction, each fenced by its own lease token and
// atomic with its own settlement; and handlers that run several tasks in
// one call (Handler::handle_many).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ledger_test_support.hpp"
#include "worker/completer.hpp"
#include "worker_test_support.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using Status = CompletionEntry::Status;

class WorkerCompleter : public testing::LedgerTest {
 protected:
  std::int64_t enqueue(const std::string& kind, const Settlement& settlement = {}) {
    return db->transact([&](Transaction& tx) {
      TaskSpec spec;
      spec.kind = kind;
      spec.settlement = settlement;
      return Outbox(tx).enqueue(spec).task_id;
    });
  }

  // Claims every pending task, ordered by id.
  std::map<std::int64_t, Task> claim_all() {
    auto tasks = db->transact([&](Transaction& tx) { return Outbox(tx).claim({"default", "w1", 100}); });
    std::map<std::int64_t, Task> by_id;
    for (auto& task : tasks) by_id.emplace(task.id, task);
    return by_id;
  }

  Task task_get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }

  std::vector<TaskAttempt> attempts(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  }

  static CompletionEntry entry(const Task& task, OutcomeKind kind) {
    CompletionEntry e;
    e.task = &task;
    e.outcome.kind = kind;
    if (kind != OutcomeKind::success) e.outcome.error = "provider said no";
    e.duration_ms = 3;
    return e;
  }

  void group_write(std::vector<CompletionEntry>& entries) {
    std::vector<CompletionEntry*> group;
    for (auto& e : entries) group.push_back(&e);
    Completer completer("w1", 3);
    Database::Lease lease = db->acquire();
    completer.group_write(*lease, group);
  }
};

// One group: plain successes (one of them a zombie whose lease moved on), a
// success that captures its hold, a retry, and a retry of a zombie. Each is
// fenced on its own: the zombies write nothing, the others all commit.
TEST_F(WorkerCompleter, GroupWithFencedOutTasksCommitsTheOthers) {
  const Account wallet = open("user:1");
  const Account clearing = open("clearing", "CNY", true);
  fund(wallet, 10000);
  const Hold hold = with_ledger([&](Ledger& l) {
    HoldRequest h;
    h.key = "wd-1";
    h.account_id = wallet.id;
    h.amount_minor = 3000;
    return l.hold(h);
  });
  const std::int64_t plain = enqueue("cache.warm");
  const std::int64_t plain_zombie = enqueue("cache.warm");
  Settlement settlement;
  settlement.hold_id = hold.id;
  settlement.capture_account_id = clearing.id;
  const std::int64_t settled = enqueue("payout", settlement);
  const std::int64_t retried = enqueue("sms.send");
  const std::int64_t retried_zombie = enqueue("sms.send");
  std::map<std::int64_t, Task> tasks = claim_all();
  ASSERT_EQ(tasks.size(), 5u);
  for (const std::int64_t zombie : {plain_zombie, retried_zombie}) *tasks.at(zombie).lease_token += 1000000;

  std::vector<CompletionEntry> entries;
  entries.push_back(entry(tasks.at(plain), OutcomeKind::success));
  entries.push_back(entry(tasks.at(plain_zombie), OutcomeKind::success));
  entries.push_back(entry(tasks.at(settled), OutcomeKind::success));
  entries.push_back(entry(tasks.at(retried), OutcomeKind::retry));
  entries.push_back(entry(tasks.at(retried_zombie), OutcomeKind::retry));
  group_write(entries);

  EXPECT_EQ(entries[0].status, Status::completed);
  EXPECT_EQ(entries[1].status, Status::lease_lost);
  EXPECT_EQ(entries[2].status, Status::completed);
  EXPECT_EQ(entries[3].status, Status::completed);
  EXPECT_EQ(entries[3].completion.state, TaskState::pending);
  EXPECT_EQ(entries[4].status, Status::lease_lost);
  EXPECT_EQ(task_get(plain).state, TaskState::succeeded);
  EXPECT_EQ(task_get(settled).state, TaskState::succeeded);
  EXPECT_EQ(task_get(retried).state, TaskState::pending);
  for (const std::int64_t zombie : {plain_zombie, retried_zombie}) {
    EXPECT_EQ(task_get(zombie).state, TaskState::running) << "task " << zombie;
    EXPECT_TRUE(attempts(zombie).empty()) << "task " << zombie;
  }
  for (const std::int64_t done : {plain, settled, retried}) EXPECT_EQ(attempts(done).size(), 1u) << "task " << done;
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.hold_get(hold.id); }).status, HoldStatus::captured);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  EXPECT_TRUE(with_ledger([](Ledger& l) { return l.audit(); }).ok());
}

// An outcome the database refuses (a retry delay past any timestamp)
// aborts its statement; its savepoint confines that to the one task, and
// the rest of the group, written after it, still commits.
TEST_F(WorkerCompleter, OutcomeTheDatabaseRefusesFailsOnlyItsOwnTask) {
  const std::int64_t first = enqueue("sms.send");
  const std::int64_t refused = enqueue("sms.send");
  const std::int64_t last = enqueue("sms.send");
  std::map<std::int64_t, Task> tasks = claim_all();
  std::vector<CompletionEntry> entries;
  entries.push_back(entry(tasks.at(first), OutcomeKind::retry));
  entries.push_back(entry(tasks.at(refused), OutcomeKind::retry));
  entries.back().outcome.retry_after_ms = std::numeric_limits<std::int64_t>::max();
  entries.push_back(entry(tasks.at(last), OutcomeKind::fail));
  group_write(entries);

  EXPECT_EQ(entries[0].status, Status::completed);
  EXPECT_EQ(entries[1].status, Status::failed);
  // Refused by the server (so inside the transaction), not before it.
  EXPECT_NE(entries[1].error.find("out of range"), std::string::npos) << entries[1].error;
  EXPECT_EQ(entries[2].status, Status::completed);
  EXPECT_EQ(task_get(first).state, TaskState::pending);
  EXPECT_EQ(task_get(refused).state, TaskState::running);  // its lease expiry records it as unknown
  EXPECT_TRUE(attempts(refused).empty());
  EXPECT_EQ(task_get(last).state, TaskState::dead);
}

// Many threads hand outcomes in at once: every one is decided exactly once
// and every task is recorded once, whoever wrote its group.
TEST_F(WorkerCompleter, ConcurrentHandInsAreEachRecordedOnce) {
  constexpr int thread_count = 8;
  constexpr int per_thread = 25;
  for (int i = 0; i < thread_count * per_thread; ++i) enqueue("cache.warm");
  auto claimed = db->transact([&](Transaction& tx) {
    return Outbox(tx).claim({"default", "w1", static_cast<std::size_t>(thread_count * per_thread)});
  });
  ASSERT_EQ(claimed.size(), static_cast<std::size_t>(thread_count * per_thread));
  Completer completer("w1", 3);
  std::atomic<bool> stopping{false};
  std::thread server([&] {
    Database::Lease lease = db->acquire();
    completer.serve([&]() -> Connection& { return *lease; }, [&] { return stopping.load(); });
  });
  std::vector<std::thread> threads;
  std::vector<std::vector<CompletionEntry>> entries(thread_count);
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      Database::Lease lease = db->acquire();
      auto& mine = entries[t];
      mine.reserve(per_thread);
      for (int i = 0; i < per_thread; ++i) {
        mine.push_back(entry(claimed[t * per_thread + i], OutcomeKind::success));
        completer.hand_in(&mine.back(), 1);
      }
      completer.wait(mine.data(), mine.size(), [&]() -> Connection& { return *lease; });
    });
  }
  for (auto& thread : threads) thread.join();
  stopping = true;
  server.join();
  for (const auto& mine : entries) {
    for (const auto& e : mine) EXPECT_EQ(e.status, Status::completed) << "task " << e.task->id;
  }
  for (const auto& task : claimed) {
    EXPECT_EQ(task_get(task.id).state, TaskState::succeeded);
    EXPECT_EQ(attempts(task.id).size(), 1u);
  }
}

// A handler that runs several tasks in one call: the worker hands it a
// claimed batch's run of its kind; a task that throws is a retry of its
// own, and the tasks after it still run and succeed.
class ManyHandler final : public Handler {
 public:
  explicit ManyHandler(std::int64_t throwing_id) : throwing_id_(throwing_id) {}
  HandlerResult handle(const Task&, const TaskContext&) override { return Outcome{}; }
  bool runs_many() const noexcept override { return true; }
  void handle_many(const TaskBatchCall& call) override {
    ++calls;
    for (std::size_t i = 0; i < call.tasks.size() && call.may_start(i); ++i) {
      if (call.tasks[i]->id == throwing_id_) throw std::runtime_error("the card network is down");
      Outcome outcome;
      outcome.result_json = Json{{"id", call.tasks[i]->id}}.dump();
      call.done(i, outcome);
    }
  }
  std::atomic<int> calls{0};

 private:
  std::int64_t throwing_id_;
};

TEST_F(WorkerCompleter, HandlerRunsAClaimedRunInFewCallsAndAThrowIsThatTasksRetry) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(enqueue("card.charge"));
  auto handler = std::make_shared<ManyHandler>(ids[4]);
  HandlerRegistry registry;
  registry.add("card.charge", handler);
  testing::LogCollector events;
  WorkerOptions o;
  o.concurrency = 1;
  o.claim_batch_count_max = 10;
  o.poll_interval = 50ms;
  o.listen = false;
  o.maintenance = false;
  o.log_sink = events.sink();
  {
    Worker worker(*db, registry, o);
    worker.start();
    ASSERT_TRUE(events.wait_count("task_done", 10));
    worker.stop();
    EXPECT_EQ(worker.stats().succeeded, 9);
    EXPECT_EQ(worker.stats().retried, 1);
    EXPECT_EQ(worker.stats().handler_exceptions, 1);
  }
  // Two calls at least (the throw ends one), far fewer than one per task.
  EXPECT_GE(handler->calls.load(), 2);
  EXPECT_LT(handler->calls.load(), 10);
  for (const std::int64_t id : ids) {
    const Task task = task_get(id);
    const auto tried = attempts(id);
    ASSERT_EQ(tried.size(), 1u) << "task " << id;
    if (id == ids[4]) {
      EXPECT_EQ(task.state, TaskState::pending);
      EXPECT_EQ(tried[0].outcome, "retry");
      ASSERT_TRUE(tried[0].error);
      EXPECT_NE(tried[0].error->find("the card network is down"), std::string::npos);
    } else {
      EXPECT_EQ(task.state, TaskState::succeeded) << "task " << id;
      EXPECT_EQ(Json::parse(*task.result_json), Json({{"id", id}}));
    }
  }
}

}  // namespace
}  // namespace payq
