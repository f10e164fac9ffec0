// The worker's parts alone: each maintenance service inside a transaction of
// the test, maintenance (election and schedule) with fake services, the
// listener with a recording wake callback, the reconnect policy, the
// parts' options; and cron fired by a plain C++ Worker. Tests wait on
// promises and condition variables, each wait bounded.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"
#include "payq/inbox.hpp"
#include "payq/outbox.hpp"
#include "payq/worker.hpp"
#include "worker/claim_loop.hpp"
#include "worker/listener.hpp"
#include "worker/maintenance.hpp"
#include "worker/reconnect_policy.hpp"
#include "worker/services.hpp"
#include "worker_test_support.hpp"

namespace payq {
namespace {

using namespace std::chrono_literals;

constexpr auto wait_bound = testing::worker_wait_bound;

class WorkerServices : public testing::LedgerTest {
 protected:
  template <typename Service>
  std::int64_t run_once(Service& service) {
    return db->transact([&](Transaction& tx) { return service.run(tx); });
  }

  std::int64_t enqueue(const std::string& kind, std::int64_t timeout_ms = 60'000) {
    TaskSpec spec;
    spec.kind = kind;
    spec.timeout_ms = timeout_ms;
    return db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec).task_id; });
  }

  Task task_get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }

  // A worker that claims the default queue and dies: the lease then runs out.
  void claim_and_vanish() {
    db->transact([&](Transaction& tx) {
      ClaimRequest request;
      request.queue = "default";
      request.worker_id = "ghost";
      ASSERT_EQ(Outbox(tx).claim(request).size(), 1u);
      tx.exec_sql("UPDATE @schema@.task SET lease_until = now() - interval '1 second' WHERE state = 'running'");
    });
  }
};

// ---------------------------------------------------------------- the services alone

TEST_F(WorkerServices, LeaseRescueRecordsAnExpiredAttemptAsUnknownAndRunsAgain) {
  const auto id = enqueue("rescued");
  claim_and_vanish();
  LeaseRescueService rescue;
  EXPECT_STREQ(rescue.name(), "leases_rescue");
  EXPECT_EQ(run_once(rescue), 1);
  EXPECT_EQ(run_once(rescue), 0);
  const Task task = task_get(id);
  EXPECT_EQ(task.state, TaskState::pending);
  const auto tried = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(id); });
  ASSERT_EQ(tried.size(), 1u);
  EXPECT_EQ(tried[0].outcome, "unknown");
  EXPECT_EQ(tried[0].worker_id, "ghost");
}

TEST_F(WorkerServices, LeaseRescueBatchIsBoundedAndAFullOneIsABacklog) {
  for (int i = 0; i < 3; ++i) {
    enqueue("rescued");
    claim_and_vanish();
  }
  LeaseRescueOptions options;
  options.schedule.batch_count_max = 2;
  LeaseRescueService rescue(options);
  const std::int64_t first = run_once(rescue);
  EXPECT_EQ(first, 2);
  EXPECT_TRUE(rescue.backlog(first));
  const std::int64_t second = run_once(rescue);
  EXPECT_EQ(second, 1);
  EXPECT_FALSE(rescue.backlog(second));
}

TEST_F(WorkerServices, HoldExpiryReleasesOnlyHoldsPastTheirExpiry) {
  Account a = open("a");
  fund(a, 1000);
  auto hold = [&](const std::string& key, std::int64_t amount, std::int64_t expires_in_ms) {
    return with_ledger([&](Ledger& l) {
      HoldRequest r;
      r.key = key;
      r.account_id = a.id;
      r.amount_minor = amount;
      r.expires_in_ms = expires_in_ms;
      return l.hold(r);
    });
  };
  const Hold gone = hold("gone", 300, 1);
  hold("kept", 100, 3'600'000);
  // Waits on the database clock, not a sleep: the first hold's expiry is past.
  db->transact([](Transaction& tx) { tx.exec_sql("SELECT pg_sleep(0.01)"); });
  HoldExpiryService expiry;
  EXPECT_STREQ(expiry.name(), "holds_expire");
  EXPECT_EQ(run_once(expiry), 1);
  EXPECT_EQ(run_once(expiry), 0);
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.hold_get(gone.id); }).status, HoldStatus::expired);
  EXPECT_EQ(account(a.id).held_minor, 100);
  expect_audit_clean();
}

TEST_F(WorkerServices, PruneDeletesFinishedTasksPastTheirAgeOnly) {
  const auto old_id = enqueue("old");
  const auto recent_id = enqueue("recent");
  const auto waiting_id = enqueue("waiting");
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.task SET state = 'cancelled', finished_at = now() - interval '2 hours' WHERE id = $1",
                {std::to_string(old_id)});
    tx.exec_sql("UPDATE @schema@.task SET state = 'cancelled', finished_at = now() WHERE id = $1",
                {std::to_string(recent_id)});
  });
  PruneOptions options;
  options.after_ms = 3'600'000;  // one hour
  PruneService prune(options);
  EXPECT_STREQ(prune.name(), "prune");
  EXPECT_EQ(run_once(prune), 1);
  EXPECT_EQ(run_once(prune), 0);
  EXPECT_EQ(count("task WHERE id = " + std::to_string(old_id)), 0);
  EXPECT_EQ(count("task WHERE id IN (" + std::to_string(recent_id) + ", " + std::to_string(waiting_id) + ")"), 2);
}

TEST_F(WorkerServices, InboxPruneDeletesEventsPastTheirRetentionOnly) {
  db->transact([&](Transaction& tx) {
    tx.exec_sql("INSERT INTO @schema@.inbox_event (provider, event_id, task_key, applied, effect, payload, "
                "received_at) VALUES ('fake', 'evt-old', 'k', true, 'no_task', '{}', now() - interval '2 hours')",
                {});
  });
  db->transact([&](Transaction& tx) { Inbox(tx).receive({"fake", "evt-new", "no-such-task", true, "{}"}); });
  InboxPruneOptions options;
  options.retention_ms = 3'600'000;
  InboxPruneService prune(options);
  EXPECT_STREQ(prune.name(), "inbox_prune");
  EXPECT_EQ(run_once(prune), 1);
  EXPECT_EQ(run_once(prune), 0);
  EXPECT_EQ(count("inbox_event WHERE event_id = 'evt-new'"), 1);
}

TEST_F(WorkerServices, CronEnqueuesTheDueSlotOnceAndNeverReportsABacklog) {
  db->transact([&](Transaction& tx) {
    Outbox(tx).cron_set({"tick", "* * * * *", "UTC", "default", "cron.tick", "{}"});
    tx.exec_sql("UPDATE @schema@.cron_entry SET created_at = now() - interval '2 minutes'");
  });
  CronService cron;
  EXPECT_STREQ(cron.name(), "cron_fire");
  const std::int64_t fired = run_once(cron);
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(cron.backlog(fired));
  EXPECT_EQ(run_once(cron), 0);
  EXPECT_EQ(count("task WHERE kind = 'cron.tick'"), 1);
}

TEST(WorkerServiceOptions, BadOptionsAreTypedErrorsAtConstruction) {
  LeaseRescueOptions rescue;
  rescue.schedule.batch_count_max = 0;
  EXPECT_THROW(LeaseRescueService{rescue}, InvalidArgument);
  HoldExpiryOptions expiry;
  expiry.schedule.batch_count_max = service_batch_count_max + 1;
  EXPECT_THROW(HoldExpiryService{expiry}, InvalidArgument);
  PruneOptions prune;
  prune.after_ms = -1;
  EXPECT_THROW(PruneService{prune}, InvalidArgument);
  PruneOptions prune_interval;
  prune_interval.schedule.interval = -1ms;
  EXPECT_THROW(PruneService{prune_interval}, InvalidArgument);
  InboxPruneOptions inbox;
  inbox.retention_ms = -1;
  EXPECT_THROW(InboxPruneService{inbox}, InvalidArgument);
  CronOptions cron;
  cron.interval = service_interval_max + 1ms;
  EXPECT_THROW(CronService{cron}, InvalidArgument);
  EXPECT_THROW(ExtraService{{}}, InvalidArgument);
  // The defaults are valid.
  EXPECT_NO_THROW(LeaseRescueService{});
  EXPECT_NO_THROW(PruneService{});
  EXPECT_NO_THROW(CronService{});
}

TEST(WorkerServiceOptions, PartsRejectBadOptions) {
  MaintenanceOptions maintenance;
  EXPECT_THROW(maintenance.validate(), InvalidArgument);  // no worker id
  maintenance.worker_id = "w";
  EXPECT_NO_THROW(maintenance.validate());
  maintenance.interval = 0ms;
  EXPECT_THROW(maintenance.validate(), InvalidArgument);
  maintenance.interval = 1s;
  maintenance.lease_interval_count = 0;
  EXPECT_THROW(maintenance.validate(), InvalidArgument);

  ListenerOptions listener;
  EXPECT_THROW(listener.validate(), InvalidArgument);  // no queues
  listener.queues = {"a"};
  EXPECT_NO_THROW(listener.validate());
  listener.wait_slice = 0ms;
  EXPECT_THROW(listener.validate(), InvalidArgument);

  ClaimLoopOptions claim;
  EXPECT_THROW(claim.validate(), InvalidArgument);  // no worker id
  claim.worker_id = "w";
  EXPECT_NO_THROW(claim.validate());
  claim.queues = {{"bad name", 1}};
  EXPECT_THROW(claim.validate(), InvalidArgument);
  claim.queues = {{"a", 1}};
  claim.reconnect = ReconnectPolicy{2s, 1s};
  EXPECT_THROW(claim.validate(), InvalidArgument);
}

// ---------------------------------------------------------------- the reconnect policy

TEST(WorkerReconnectPolicy, DoublesFromMinUpToMax) {
  const ReconnectPolicy policy{100ms, 1'000ms};
  EXPECT_EQ(policy.delay(0), 100ms);
  EXPECT_EQ(policy.delay(1), 100ms);
  EXPECT_EQ(policy.delay(2), 200ms);
  EXPECT_EQ(policy.delay(4), 800ms);
  EXPECT_EQ(policy.delay(5), 1'000ms);
  EXPECT_EQ(policy.delay(1'000'000), 1'000ms);
  // 100, 200, 400, 800, then max: the fifth failure reaches it.
  EXPECT_EQ(policy.failure_count_max(), 5);
  EXPECT_EQ(policy.delay(policy.failure_count_max()), policy.max);
}

TEST(WorkerReconnectPolicy, TheWorkerDefaultsKeepTheirCaps) {
  // The claim loop waits at most 10 s, the listener and maintenance 30 s.
  EXPECT_EQ(claim_reconnect_default.delay(claim_reconnect_default.failure_count_max()), 10'000ms);
  EXPECT_EQ(claim_reconnect_default.failure_count_max(), 8);
  EXPECT_EQ(listener_reconnect_default.delay(listener_reconnect_default.failure_count_max()), 30'000ms);
  EXPECT_EQ(maintenance_reconnect_default.failure_count_max(), 10);
}

TEST(WorkerReconnectPolicy, BadPoliciesAreRejected) {
  EXPECT_THROW((ReconnectPolicy{0ms, 1s}.validate("test")), InvalidArgument);
  EXPECT_THROW((ReconnectPolicy{2s, 1s}.validate("test")), InvalidArgument);
  EXPECT_THROW((ReconnectPolicy{1ms, reconnect_delay_max + 1ms}.validate("test")), InvalidArgument);
  EXPECT_NO_THROW((ReconnectPolicy{1s, 1s}.validate("test")));
}

// ---------------------------------------------------------------- maintenance alone

// A service the test controls: counts its runs, reports `count` rows, or
// throws when told to.
class FakeService final : public MaintenanceService {
 public:
  FakeService(const char* name, std::int64_t count, std::chrono::milliseconds interval, bool fails)
      : name_(name), count_(count), interval_(interval), fails_(fails) {}
  const char* name() const noexcept override { return name_; }
  std::int64_t run(Transaction&) override {
    ++runs;
    if (fails_) throw std::runtime_error("the fake service failed");
    return count_;
  }
  bool backlog(std::int64_t) const noexcept override { return false; }
  std::chrono::milliseconds interval() const noexcept override { return interval_; }
  std::atomic<int> runs{0};

 private:
  const char* name_;
  std::int64_t count_;
  std::chrono::milliseconds interval_;
  bool fails_;
};

// Runs a Maintenance on a thread of its own until the test ends it.
class MaintenanceRun {
 public:
  MaintenanceRun(Database& database, std::vector<MaintenanceStep> steps)
      : log_("maintenance-test", [](const std::string&) {}, false),
        maintenance_(database, options(), std::move(steps), stop_, log_, counters) {
    thread_ = std::thread([this] { maintenance_.run(); });
  }
  ~MaintenanceRun() { finish(); }
  void finish() {
    stop_.request();
    if (thread_.joinable()) thread_.join();
  }
  WorkerCounters counters;

 private:
  static MaintenanceOptions options() {
    MaintenanceOptions o;
    o.worker_id = "maintenance-test";
    o.interval = 10ms;
    return o;
  }
  WorkerLog log_;
  StopSignal stop_;
  Maintenance maintenance_;
  std::thread thread_;
};

TEST_F(WorkerServices, MaintenanceRunsEveryServiceAndAFailingOneBlocksNoOther) {
  auto failing = std::make_unique<FakeService>("failing", 0, service_interval_every_tick, true);
  auto counting = std::make_unique<FakeService>("counting", 2, service_interval_every_tick, false);
  FakeService& failing_ref = *failing;
  std::promise<std::int64_t> committed;
  std::once_flag once;
  std::vector<MaintenanceStep> steps;
  steps.push_back({std::move(failing), {}});
  steps.push_back({std::move(counting), [&](std::int64_t count) {
                     std::call_once(once, [&] { committed.set_value(count); });
                   }});
  MaintenanceRun run(*db, std::move(steps));
  auto ran_once = committed.get_future();
  ASSERT_EQ(ran_once.wait_for(wait_bound), std::future_status::ready);
  EXPECT_EQ(ran_once.get(), 2);
  EXPECT_TRUE(run.counters.maintenance_leader.load());
  run.finish();
  EXPECT_GE(failing_ref.runs.load(), 1);
  EXPECT_GE(run.counters.maintenance_ticks.load(), 1);
  EXPECT_FALSE(run.counters.maintenance_leader.load());
  // Given up at stop: the lease has run out, another worker takes it at once.
  EXPECT_EQ(count("maintenance_lease WHERE holder = 'maintenance-test' AND expires_at < now()"), 1);
}

TEST_F(WorkerServices, MaintenanceRunsAServiceOnlyOnItsOwnSchedule) {
  auto hourly = std::make_unique<FakeService>("hourly", 0, 3'600'000ms, false);
  auto every_tick = std::make_unique<FakeService>("every_tick", 0, service_interval_every_tick, false);
  FakeService& hourly_ref = *hourly;
  constexpr int tick_count = 3;
  std::promise<void> ticked;
  int ticks = 0;  // only the maintenance thread touches it
  std::vector<MaintenanceStep> steps;
  steps.push_back({std::move(hourly), {}});
  steps.push_back({std::move(every_tick), [&](std::int64_t) {
                     if (++ticks == tick_count) ticked.set_value();
                   }});
  MaintenanceRun run(*db, std::move(steps));
  ASSERT_EQ(ticked.get_future().wait_for(wait_bound), std::future_status::ready);
  run.finish();
  EXPECT_EQ(hourly_ref.runs.load(), 1);
}

// ---------------------------------------------------------------- the listener alone

// Records the wake calls of a listener and lets the test wait for them.
class WakeRecorder {
 public:
  Listener::Wake callback() {
    return [this](int token_count) {
      {
        std::lock_guard<std::mutex> guard(mutex_);
        calls_.push_back(token_count);
      }
      cv_.notify_all();
    };
  }
  bool wait_calls(std::size_t count) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, wait_bound, [&] { return calls_.size() >= count; });
  }
  std::vector<int> calls() {
    std::lock_guard<std::mutex> guard(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int> calls_;
};

TEST_F(WorkerServices, ListenerWakesAllOnListeningThenOnePerServedNotification) {
  ASSERT_TRUE(db->listen_dsn());
  WakeRecorder recorder;
  ListenerOptions options;
  options.queues = {"served"};
  options.listen_wake_count = 3;
  options.wait_slice = 20ms;
  WorkerLog log("listener-test", [](const std::string&) {}, false);
  StopSignal stop;
  Listener listener(*db, options, recorder.callback(), stop, log);
  std::thread thread([&] { listener.run(); });
  // Stops and joins the listener even when an assertion throws below.
  struct Joiner {
    StopSignal& stop;
    std::thread& thread;
    ~Joiner() {
      stop.request();
      if (thread.joinable()) thread.join();
    }
  } joiner{stop, thread};
  const bool listening = recorder.wait_calls(1);
  if (listening) {
    // Delivered in commit order: the unserved queue's notification comes
    // first and must wake nobody.
    notify_queue(*db, "unserved");
    notify_queue(*db, "served");
    // An empty payload (sent by hand: notify_queue wants a queue) wakes
    // for every queue.
    db->transact([&](Transaction& tx) {
      tx.exec_sql("SELECT pg_notify($1, '')", {queue_notify_channel(db->schema())});
    });
  }
  const bool woken = listening && recorder.wait_calls(3);
  stop.request();
  thread.join();
  ASSERT_TRUE(listening);
  ASSERT_TRUE(woken);
  EXPECT_EQ(recorder.calls(), (std::vector<int>{3, 1, 1}));
}

TEST_F(WorkerServices, ListenerRefusesAnEmptyWakeCallback) {
  WorkerLog log("listener-test", [](const std::string&) {}, false);
  StopSignal stop;
  ListenerOptions options;
  options.queues = {"a"};
  EXPECT_THROW(Listener(*db, options, Listener::Wake{}, stop, log), InvalidArgument);
}

// ---------------------------------------------------------------- cron in a plain C++ worker

// No binding injects cron any more: the C++ Worker's maintenance fires the
// due slot, and its claim loop runs the task.
TEST_F(WorkerServices, PlainCppWorkerFiresCron) {
  db->transact([&](Transaction& tx) {
    Outbox(tx).cron_set({"tick", "* * * * *", "UTC", "default", "cron.tick", "{}"});
    tx.exec_sql("UPDATE @schema@.cron_entry SET created_at = now() - interval '2 minutes'");
  });
  HandlerRegistry registry;
  std::promise<std::string> ran;
  std::once_flag once;
  registry.add("cron.tick", [&](const Task& task, const TaskContext&) -> HandlerResult {
    std::call_once(once, [&] { ran.set_value(task.unique_key.value_or("")); });
    return Outcome{};
  });
  testing::LogCollector logs;
  WorkerOptions o;
  o.concurrency = 1;
  o.poll_interval = 20ms;
  o.listen = false;
  o.maintenance_interval = 20ms;
  o.log_sink = logs.sink();
  std::string unique_key;
  {
    testing::Running running(*db, registry, o);
    auto future = ran.get_future();
    ASSERT_EQ(future.wait_for(wait_bound), std::future_status::ready);
    unique_key = future.get();
    running.worker.stop();
    EXPECT_EQ(running.worker.stats().cron_tasks_enqueued, 1);
  }
  EXPECT_EQ(unique_key.rfind("cron:tick:", 0), 0u) << unique_key;
  EXPECT_EQ(count("task WHERE kind = 'cron.tick'"), 1);
}

}  // namespace
}  // namespace payq
