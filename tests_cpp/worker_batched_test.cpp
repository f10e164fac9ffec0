// Batched completion: successes of a kind registered with
// HandlerOptions::batched_completion are recorded together by
// Outbox::complete_success_batch, fenced by each task's lease; settled tasks
// and other outcomes still complete one by one.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>

#include <nlohmann/json.hpp>

#include "ledger_test_support.hpp"
#include "worker_test_support.hpp"
#include "payq/error.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"

namespace payq {
namespace {

using testing::LogCollector;

using namespace std::chrono_literals;
using Json = nlohmann::json;

// Every wait in this file ends after this long, failing the test.
constexpr auto wait_bound = testing::worker_wait_bound;

class WorkerBatched : public testing::LedgerTest {
 protected:
  WorkerOptions options() {
    WorkerOptions o;
    o.concurrency = 2;
    o.claim_batch_count_max = 10;
    o.poll_interval = 50ms;
    o.listen = false;
    o.maintenance = false;
    o.shutdown_grace = 10s;
    o.log_sink = events.sink();
    return o;
  }

  static HandlerOptions batched() {
    HandlerOptions o;
    o.batched_completion = true;
    return o;
  }

  std::vector<std::int64_t> enqueue_many(const std::string& kind, int count) {
    std::vector<TaskSpec> specs;
    for (int i = 0; i < count; ++i) {
      TaskSpec spec;
      spec.kind = kind;
      spec.payload_json = Json{{"n", i}}.dump();
      specs.push_back(spec);
    }
    return db->transact([&](Transaction& tx) {
      std::vector<std::int64_t> ids;
      for (const auto& r : Outbox(tx).enqueue_batch(specs)) ids.push_back(r.task_id);
      return ids;
    });
  }

  std::vector<Task> claim(std::size_t count) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).claim({"default", "w1", count}); });
  }

  Task task_get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }

  std::vector<TaskAttempt> attempts(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  }

  LogCollector events;
  HandlerRegistry registry;
};

TEST_F(WorkerBatched, TwoHundredTasksEachSucceedOnceWithAttemptRows) {
  constexpr int task_count = 200;
  std::mutex mutex;
  std::map<std::int64_t, int> handled;
  registry.add(
      "cache.warm",
      [&](const Task& task, const TaskContext&) -> HandlerResult {
        std::lock_guard<std::mutex> guard(mutex);
        ++handled[task.id];
        Outcome outcome;
        outcome.result_json = task.payload_json;
        return outcome;
      },
      batched());
  const auto ids = enqueue_many("cache.warm", task_count);
  {
    Worker worker(*db, registry, options());
    worker.start();
    ASSERT_TRUE(events.wait_count("task_done", task_count));
    worker.stop();
    EXPECT_EQ(worker.stats().succeeded, task_count);
    EXPECT_EQ(worker.stats().batched_completions, task_count);
    EXPECT_EQ(worker.stats().lease_lost, 0);
  }
  for (const auto id : ids) {
    EXPECT_EQ(handled[id], 1) << "task " << id;
    const Task task = task_get(id);
    EXPECT_EQ(task.state, TaskState::succeeded);
    EXPECT_FALSE(task.lease_token);
    EXPECT_TRUE(task.finished_at);
    ASSERT_TRUE(task.result_json);
    EXPECT_EQ(Json::parse(*task.result_json), Json::parse(task.payload_json));
    const auto tried = attempts(id);
    ASSERT_EQ(tried.size(), 1u) << "task " << id;
    EXPECT_EQ(tried[0].outcome, "success");
    EXPECT_EQ(tried[0].attempt, 1);
    EXPECT_GT(tried[0].lease_token, 0);
  }
}

TEST_F(WorkerBatched, ZombieInABatchIsNotCompletedAndTheOthersAre) {
  registry.add(
      "cache.warm",
      [&](const Task& task, const TaskContext&) -> HandlerResult {
        if (Json::parse(task.payload_json).at("n") == 2) {
          // Another worker took this task over while the attempt ran.
          db->transact([&](Transaction& tx) {
            tx.exec_sql("UPDATE @schema@.task SET lease_token = lease_token + 1000000 WHERE id = $1::bigint",
                        {std::to_string(task.id)});
          });
        }
        return Outcome{};
      },
      batched());
  const auto ids = enqueue_many("cache.warm", 5);
  WorkerOptions o = options();
  o.concurrency = 1;
  Worker worker(*db, registry, o);
  worker.start();
  ASSERT_TRUE(events.wait_count("task_lease_lost", 1));
  ASSERT_TRUE(events.wait_count("task_done", 4));
  worker.stop();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const Task task = task_get(ids[i]);
    if (i == 2) {
      EXPECT_EQ(task.state, TaskState::running);  // still the other attempt's
      EXPECT_TRUE(attempts(ids[i]).empty());
    } else {
      EXPECT_EQ(task.state, TaskState::succeeded);
      EXPECT_EQ(attempts(ids[i]).size(), 1u);
    }
  }
  EXPECT_EQ(worker.stats().lease_lost, 1);
  EXPECT_EQ(worker.stats().batched_completions, 4);
}

// A result PostgreSQL cannot store (here a NUL character, which jsonb
// refuses) is no success and fails no batch: the others in the batch
// succeed, the bad one is `unknown` with the reason, its handler ran once.
TEST_F(WorkerBatched, AResultTheStoreCannotHoldIsUnknownAndFailsNoBatch) {
  std::mutex mutex;
  std::map<std::int64_t, int> handled;
  registry.add(
      "cache.warm",
      [&](const Task& task, const TaskContext&) -> HandlerResult {
        {
          std::lock_guard<std::mutex> guard(mutex);
          ++handled[task.id];
        }
        Outcome outcome;
        outcome.result_json = Json::parse(task.payload_json).at("n") == 2 ? R"({"raw":"a\u0000b"})" : "{}";
        return outcome;
      },
      batched());
  const auto ids = enqueue_many("cache.warm", 5);
  WorkerOptions o = options();
  o.concurrency = 1;
  {
    Worker worker(*db, registry, o);
    worker.start();
    ASSERT_TRUE(events.wait_count("task_done", 5));
    worker.stop();
    EXPECT_EQ(worker.stats().succeeded, 4);
    EXPECT_EQ(worker.stats().complete_errors, 0);
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(handled[ids[i]], 1) << "task " << ids[i];
    const auto tried = attempts(ids[i]);
    ASSERT_EQ(tried.size(), 1u) << "task " << ids[i];
    if (i == 2) {
      EXPECT_EQ(tried[0].outcome, "unknown");
      ASSERT_TRUE(tried[0].error);
      EXPECT_NE(tried[0].error->find("result cannot be stored"), std::string::npos) << *tried[0].error;
      EXPECT_NE(task_get(ids[i]).state, TaskState::succeeded);
    } else {
      EXPECT_EQ(tried[0].outcome, "success");
      EXPECT_EQ(task_get(ids[i]).state, TaskState::succeeded);
    }
  }
}

TEST_F(WorkerBatched, SettledTaskCompletesThroughTheFencedPathAndCapturesItsHold) {
  const Account wallet = open("user:1");
  const Account clearing = open("clearing", "CNY", true);
  fund(wallet, 10000);
  registry.add("payout", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; }, batched());
  const auto settled = db->transact([&](Transaction& tx) {
    HoldRequest h;
    h.key = "wd-1";
    h.account_id = wallet.id;
    h.amount_minor = 3000;
    Hold held = Ledger(tx).hold(h);
    TaskSpec s;
    s.kind = "payout";
    s.settlement.hold_id = held.id;
    s.settlement.capture_account_id = clearing.id;
    return std::make_pair(held, Outbox(tx).enqueue(s).task_id);
  });
  const Hold hold = settled.first;
  const std::int64_t settled_id = settled.second;
  const auto plain_id = enqueue_many("payout", 1)[0];
  {
    Worker worker(*db, registry, options());
    worker.start();
    ASSERT_TRUE(events.wait_count("task_done", 2));
    worker.stop();
    EXPECT_EQ(worker.stats().succeeded, 2);
    EXPECT_EQ(worker.stats().batched_completions, 1);  // the plain task only
  }
  EXPECT_EQ(task_get(settled_id).state, TaskState::succeeded);
  EXPECT_EQ(task_get(plain_id).state, TaskState::succeeded);
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.hold_get(hold.id); }).status, HoldStatus::captured);
  EXPECT_EQ(account(wallet.id).balance_minor, 7000);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  EXPECT_TRUE(with_ledger([](Ledger& l) { return l.audit(); }).ok());
}

TEST_F(WorkerBatched, OutboxBatchSkipsLostLeasesAndSettledTasks) {
  enqueue_many("cache.warm", 3);
  const Account wallet = open("user:2");
  const Account clearing = open("clearing", "CNY", true);
  fund(wallet, 10000);
  db->transact([&](Transaction& tx) {
    HoldRequest h;
    h.key = "wd-2";
    h.account_id = wallet.id;
    h.amount_minor = 100;
    TaskSpec s;
    s.kind = "payout";
    s.settlement.hold_id = Ledger(tx).hold(h).id;
    s.settlement.capture_account_id = clearing.id;
    Outbox(tx).enqueue(s);
  });
  const auto tasks = claim(4);
  ASSERT_EQ(tasks.size(), 4u);
  std::vector<BatchSuccess> items;
  for (const auto& t : tasks) items.push_back(BatchSuccess{t.id, *t.lease_token, R"({"quote":"a\"b\\c"})", 7});
  items[1].lease_token += 1000000;  // a zombie
  const auto done = db->transact([&](Transaction& tx) { return Outbox(tx).complete_success_batch(items, "w1"); });
  std::vector<std::int64_t> expected;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    if (i != 1 && !tasks[i].settlement.hold_id) expected.push_back(tasks[i].id);
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(done, expected);
  for (const auto& t : tasks) {
    const bool completed = std::find(done.begin(), done.end(), t.id) != done.end();
    EXPECT_EQ(task_get(t.id).state, completed ? TaskState::succeeded : TaskState::running);
    if (completed) {
      EXPECT_EQ(Json::parse(*task_get(t.id).result_json), Json({{"quote", "a\"b\\c"}}));
      EXPECT_EQ(attempts(t.id).at(0).duration_ms, 7);
    }
  }
  std::vector<BatchSuccess> twice{items[0], items[0]};
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).complete_success_batch(twice, "w1"); }),
               InvalidArgument);
  std::vector<BatchSuccess> too_many(complete_batch_count_max + 1);
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).complete_success_batch(too_many, "w1"); }),
               InvalidArgument);
}

}  // namespace
}  // namespace payq
