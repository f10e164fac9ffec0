// The worker's background parts under a real Worker and PostgreSQL: NOTIFY
// waking idle threads, the maintenance election and what the leader does
// (rescue, inbox pruning), and recovery when the listener's, the leader's or
// the claiming threads' connections are killed. Tests wait on the worker's
// log events, each wait with a bound that fails the test rather than hanging
// it. (The parts alone: worker_services_test.cpp.)
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"
#include "worker_test_support.hpp"

namespace payq {
namespace {

using testing::LogCollector;
using testing::Running;
using testing::WorkerTest;
using namespace std::chrono_literals;
using Json = nlohmann::json;

TEST_F(WorkerTest, ListenWakesAnIdleWorkerLongBeforeThePollInterval) {
  registry.add("ping", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; });
  WorkerOptions o = options();
  o.concurrency = 2;
  o.listen = true;
  o.log_debug = true;
  o.poll_interval = 30s;  // far beyond the bound below: only NOTIFY can be this fast
  Running running(*db, registry, o);
  // Both threads idle, with no wake token left, after the listener listens.
  ASSERT_TRUE(logs.wait_for([](const std::vector<Json>& events) {
    std::set<int> idle_after_listening;
    bool listening = false;
    for (const auto& e : events) {
      if (e.at("event") == "listener_listening") listening = true;
      if (listening && e.at("event") == "worker_idle") idle_after_listening.insert(e.at("thread").get<int>());
    }
    return idle_after_listening.size() == 2;
  }));
  enqueue_many("ping", 1);
  notify_queue(*db, "default");
  EXPECT_TRUE(logs.wait_count("task_done", 1, 10s))
      << "the task was not run within 10 s of NOTIFY (poll interval is 30 s)";
}

TEST_F(WorkerTest, MaintenanceElectsExactlyOneLeader) {
  auto second_db = open_database();
  WorkerOptions a = options();
  a.concurrency = 1;
  a.maintenance = true;
  a.maintenance_interval = 20ms;
  a.log_debug = true;
  a.worker_id = "worker-a";
  WorkerOptions b = a;
  b.worker_id = "worker-b";
  auto count_by = [](const std::vector<Json>& events, const std::string& event, const std::string& worker) {
    std::size_t n = 0;
    for (const auto& e : events) n += (e.at("event") == event && e.at("worker") == worker) ? 1 : 0;
    return n;
  };
  auto first = std::make_unique<Worker>(*db, registry, a);
  Worker second(*second_db, registry, b);
  first->start();
  second.start();
  // One leader, and the other has found the lock busy several times.
  ASSERT_TRUE(logs.wait_for([&](const std::vector<Json>& events) {
    const auto leaders = LogCollector::count_of(events, "maintenance_leader_acquired");
    return leaders >= 1 && (count_by(events, "maintenance_lock_busy", "worker-a") >= 5 ||
                            count_by(events, "maintenance_lock_busy", "worker-b") >= 5);
  }));
  auto events = logs.events();
  EXPECT_EQ(LogCollector::count_of(events, "maintenance_leader_acquired"), 1u);
  const bool a_leads = count_by(events, "maintenance_leader_acquired", "worker-a") == 1;
  EXPECT_EQ(first->stats().maintenance_leader, a_leads);
  EXPECT_EQ(second.stats().maintenance_leader, !a_leads);
  // Whoever leads keeps ticking; the other one never does.
  Worker& leader = a_leads ? *first : second;
  const std::string follower_id = a_leads ? "worker-b" : "worker-a";
  EXPECT_GT(leader.stats().maintenance_ticks, 0);
  // When the leader stops, the other takes over.
  leader.stop();
  ASSERT_TRUE(logs.wait_for([&](const std::vector<Json>& all) {
    return count_by(all, "maintenance_leader_acquired", follower_id) == 1;
  }));
  first->stop();
  second.stop();
  events = logs.events();
  EXPECT_EQ(LogCollector::count_of(events, "maintenance_leader_acquired"), 2u);
}

TEST_F(WorkerTest, MaintenanceRescuesAnExpiredLeaseAsUnknown) {
  std::mutex mutex;
  std::vector<std::string> keys_seen;
  registry.add("rescued", [&](const Task& task, const TaskContext&) -> HandlerResult {
    std::lock_guard<std::mutex> guard(mutex);
    keys_seen.push_back(task.idempotency_key);
    return Outcome{};
  });
  TaskSpec spec;
  spec.kind = "rescued";
  spec.timeout_ms = 200;
  const auto id = enqueue(spec);
  // A worker that claims and then dies.
  db->transact([&](Transaction& tx) {
    ClaimRequest request;
    request.queue = "default";
    request.worker_id = "ghost";
    ASSERT_EQ(Outbox(tx).claim(request).size(), 1u);
  });
  WorkerOptions o = options();
  o.maintenance = true;
  o.maintenance_interval = 20ms;
  Running running(*db, registry, o);
  ASSERT_TRUE(wait_state(id, "succeeded"));
  const auto tried = attempts(id);
  ASSERT_EQ(tried.size(), 2u);
  EXPECT_EQ(tried[0].outcome, "unknown");
  EXPECT_EQ(tried[0].worker_id, "ghost");
  EXPECT_EQ(tried[1].outcome, "success");
  std::lock_guard<std::mutex> guard(mutex);
  ASSERT_EQ(keys_seen.size(), 1u);
  EXPECT_EQ(keys_seen[0], task_get(id).idempotency_key);
}

TEST_F(WorkerTest, MaintenancePrunesInboxEventsPastTheirRetention) {
  // An event received two hours ago (written directly: events are never updated).
  db->transact([&](Transaction& tx) {
    tx.exec_sql("INSERT INTO @schema@.inbox_event (provider, event_id, task_key, applied, effect, payload, "
                "received_at) VALUES ('fake', 'evt-old', 'k', true, 'no_task', '{}', now() - interval '2 hours')",
                {});
  });
  db->transact([&](Transaction& tx) { Inbox(tx).receive({"fake", "evt-new", "no-such-task", true, "{}"}); });
  WorkerOptions o = options();
  o.maintenance = true;
  o.maintenance_interval = 20ms;
  o.inbox_retention_ms = 3'600'000;  // one hour
  std::int64_t pruned = 0;
  {
    Running running(*db, registry, o);
    ASSERT_TRUE(logs.wait_count("maintenance_step", 1));
    pruned = running.worker.stats().inbox_events_pruned;
  }
  EXPECT_EQ(pruned, 1);
  const auto left = db->transact([&](Transaction& tx) {
    return tx.exec_sql("SELECT string_agg(event_id, ',') AS ids FROM @schema@.inbox_event", {}).text(0, "ids");
  });
  EXPECT_EQ(left, "evt-new");
}

// Ends every other session whose last statement contains `marker`; returns
// how many.
std::int64_t backends_terminate(Database& database, const std::string& marker) {
  return database.transact([&](Transaction& tx) {
    return tx
        .exec_sql("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                  "WHERE pid <> pg_backend_pid() AND datname = current_database() AND query LIKE '%' || $1 || '%'",
                  {marker})
        .i64(0, "n");
  });
}

TEST_F(WorkerTest, ListenerReconnectsAfterItsConnectionIsKilled) {
  registry.add("ping", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; });
  WorkerOptions o = options();
  o.concurrency = 1;
  o.listen = true;
  o.log_debug = true;
  o.poll_interval = 30s;
  Running running(*db, registry, o);
  ASSERT_TRUE(logs.wait_count("listener_listening", 1));
  ASSERT_EQ(backends_terminate(*db, "LISTEN \"" + queue_notify_channel(schema) + "\""), 1);
  ASSERT_TRUE(logs.wait_count("listener_failed", 1));
  // Listening again, and the claiming thread idle after that.
  ASSERT_TRUE(logs.wait_for([](const std::vector<Json>& events) {
    std::size_t listening = 0;
    bool idle_after = false;
    for (const auto& e : events) {
      if (e.at("event") == "listener_listening") ++listening, idle_after = false;
      if (listening == 2 && e.at("event") == "worker_idle") idle_after = true;
    }
    return idle_after;
  }));
  enqueue_many("ping", 1);
  notify_queue(*db, "default");
  EXPECT_TRUE(logs.wait_count("task_done", 1, 10s));
}

TEST_F(WorkerTest, MaintenanceLeaderReelectsAfterItsConnectionIsKilled) {
  WorkerOptions o = options();
  o.concurrency = 1;
  o.maintenance = true;
  o.maintenance_interval = 20ms;
  Running running(*db, registry, o);
  ASSERT_TRUE(logs.wait_count("maintenance_leader_acquired", 1));
  // Every other session: the claiming thread's recovers unseen, the
  // maintenance session's is not silently replaced.
  const std::int64_t killed = db->transact([&](Transaction& tx) {
    return tx
        .exec_sql("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                  "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                  "AND backend_type = 'client backend'")
        .i64(0, "n");
  });
  ASSERT_GE(killed, 1);
  ASSERT_TRUE(logs.wait_count("maintenance_leader_lost", 1));
  ASSERT_TRUE(logs.wait_count("maintenance_leader_acquired", 2));
  EXPECT_TRUE(running.worker.stats().maintenance_leader);
}

// The election is a lease row: a leader that stops gives it up and another
// worker takes it at its next tick; one that stays holds it.
TEST_F(WorkerTest, MaintenanceLeaseMovesToAnotherWorkerWhenTheLeaderStops) {
  WorkerOptions o = options();
  o.concurrency = 1;
  o.maintenance = true;
  o.maintenance_interval = 20ms;
  LogCollector second_logs;
  WorkerOptions second_options = o;
  second_options.log_sink = second_logs.sink();
  auto first = std::make_unique<Running>(*db, registry, o);
  ASSERT_TRUE(logs.wait_count("maintenance_leader_acquired", 1));
  auto second_db = open_database();
  Running second(*second_db, registry, second_options);
  ASSERT_TRUE(second_logs.wait_count("worker_started", 1));
  EXPECT_FALSE(second_logs.wait_count("maintenance_leader_acquired", 1, 300ms));
  first.reset();  // stops: gives the lease up
  EXPECT_TRUE(logs.wait_count("maintenance_leader_released", 1));
  ASSERT_TRUE(second_logs.wait_count("maintenance_leader_acquired", 1));
  EXPECT_TRUE(second.worker.stats().maintenance_leader);
  const std::string holder = db->transact([](Transaction& tx) {
    return tx.exec_sql("SELECT holder FROM @schema@.maintenance_lease").text(0, "holder");
  });
  EXPECT_EQ(holder, second.worker.worker_id());
}

TEST_F(WorkerTest, ClaimingThreadsRecoverFromKilledConnections) {
  registry.add("after", [](const Task&, const TaskContext&) -> HandlerResult { return Outcome{}; });
  WorkerOptions o = options();
  o.concurrency = 2;
  o.log_debug = true;
  Running running(*db, registry, o);
  ASSERT_TRUE(logs.wait_count("worker_idle", 2));
  // Every other session of the database: the threads' connections (their
  // last statement is a COMMIT, so they cannot be told apart by text). The
  // test's own pool holds only the connection that runs this.
  ASSERT_GE(backends_terminate(*db, ""), 2);
  enqueue_many("after", 10);
  ASSERT_TRUE(wait_done(10));
  EXPECT_EQ(count_in_state("succeeded"), 10);
  // A connection that died while idle is replaced before its next use: the
  // threads never saw the database as unavailable.
  EXPECT_FALSE(logs.wait_count("database_unavailable", 1, 0ms));
}

}  // namespace
}  // namespace payq
