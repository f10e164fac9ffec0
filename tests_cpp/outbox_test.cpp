#include "payq/outbox.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "ledger_test_support.hpp"
#include "outbox_test_support.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"

namespace payq {
namespace {

using testing::Outbox_;

TEST_F(Outbox_, RollbackDiscardsTheTaskCommitKeepsExactlyOne) {
  {
    auto lease = db->acquire();
    Transaction tx(*lease);
    Outbox(tx).enqueue(spec());
    tx.rollback();
  }
  EXPECT_EQ(count_tasks("sms.send"), 0);
  auto created = enqueue(spec());
  EXPECT_TRUE(created.created);
  EXPECT_EQ(count_tasks("sms.send"), 1);
  Task task = get(created.task_id);
  EXPECT_EQ(task.state, TaskState::pending);
  EXPECT_EQ(task.idempotency_key, "task:" + std::to_string(created.task_id));
}

TEST_F(Outbox_, DuplicateUniqueKeyReturnsTheExistingTask) {
  TaskSpec s = spec();
  s.unique_key = "sms:order-7";
  auto first = enqueue(s);
  auto second = enqueue(s);
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(second.created);
  EXPECT_EQ(first.task_id, second.task_id);
  auto batch = db->transact([&](Transaction& tx) { return Outbox(tx).enqueue_batch({s, spec(), s}); });
  EXPECT_EQ(batch[0].task_id, first.task_id);
  EXPECT_TRUE(batch[1].created);
  EXPECT_EQ(batch[2].task_id, first.task_id);
  EXPECT_EQ(count_tasks("sms.send"), 2);
}

TEST_F(Outbox_, BadInputIsRejectedWithNothingWritten) {
  auto bad = [&](auto mutate) {
    TaskSpec s = spec();
    mutate(s);
    return s;
  };
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.kind = ""; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.payload_json = "{not json"; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.delay_ms = -1; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.payload_json = "\"" + std::string(300 * 1024, 'x') + "\""; })),
               InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.queue = "bad queue!"; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.attempt_max = 0; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.amount_minor = 100; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) { s.settlement.hold_id = 1; })), InvalidArgument);
  EXPECT_THROW(enqueue(bad([](TaskSpec& s) {
                 s.amount_minor = 1;
                 s.currency = "XQQ";
               })),
               UnknownCurrency);
  // A batch with one bad task writes none of them.
  EXPECT_THROW(db->transact([&](Transaction& tx) {
                 return Outbox(tx).enqueue_batch({spec(), bad([](TaskSpec& s) { s.kind = ""; })});
               }),
               InvalidArgument);
  EXPECT_EQ(count_tasks("sms.send"), 0);
}

TEST_F(Outbox_, NulInPayloadOrFollowUpIsRefusedBeforeTheDatabase) {
  TaskSpec nul = spec();
  nul.payload_json = R"({"text":"a\u0000b"})";
  EXPECT_THROW(enqueue(nul), InvalidArgument);
  TaskSpec followup = spec();
  followup.settlement.followup_json = R"({"kind":"refund","payload":{"x":"\u0000"}})";
  EXPECT_THROW(enqueue(followup), InvalidArgument);
  EXPECT_EQ(count_tasks("sms.send"), 0);
}

TEST_F(Outbox_, QueueSettingsUseTheEnqueueNameRule) {
  // Refused in C++ as enqueue refuses it, not by the table's CHECK.
  for (const char* name : {"x'); drop table task; --", "bad queue!", ""}) {
    QueueConfig config;
    config.name = name;
    EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_configure(config); }), InvalidArgument);
    EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause(name, true); }), InvalidArgument);
    EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_pause_until(name, 1000); }), InvalidArgument);
    TaskSpec s = spec();
    s.queue = name;
    EXPECT_THROW(enqueue(s), InvalidArgument);
  }
  QueueConfig ok;
  ok.name = "provider-a:payouts.v2";
  EXPECT_NO_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_configure(ok); }));
}

TEST_F(Outbox_, ClaimLeasesAndOnlyTheLeaseHolderCompletes) {
  auto created = enqueue(spec());
  auto claimed = claim();
  ASSERT_EQ(claimed.size(), 1u);
  const Task& task = claimed[0];
  EXPECT_EQ(task.id, created.task_id);
  EXPECT_EQ(task.state, TaskState::running);
  EXPECT_EQ(task.attempt, 1);
  ASSERT_TRUE(task.lease_token.has_value());
  EXPECT_TRUE(claim().empty());  // nothing else to claim
  Task zombie = task;
  zombie.lease_token = *task.lease_token + 1000;
  EXPECT_THROW(complete(zombie, OutcomeKind::success), LeaseLost);
  auto done = complete(task, OutcomeKind::success);
  EXPECT_EQ(done.state, TaskState::succeeded);
  EXPECT_THROW(complete(task, OutcomeKind::success), LeaseLost);  // only once
  Task after = get(task.id);
  EXPECT_EQ(after.result_json, R"({"provider_id": "p-1"})");
  auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(task.id); });
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, "success");
}

TEST_F(Outbox_, RetryBacksOffThenExhaustsToDeadWithAnAlert) {
  TaskSpec s = spec();
  s.attempt_max = 2;
  enqueue(s);
  Task first = claim().at(0);
  auto c1 = complete(first, OutcomeKind::retry, "provider 503", std::nullopt);
  EXPECT_EQ(c1.state, TaskState::pending);
  EXPECT_TRUE(c1.alerted);  // the next attempt is the last
  ASSERT_TRUE(c1.next_run_in_ms.has_value());
  EXPECT_GE(*c1.next_run_in_ms, 0);
  EXPECT_LE(*c1.next_run_in_ms, BackoffPolicy{}.delay_ms_base);
  // Not claimable before its backoff (unless the delay happened to be 0).
  if (*c1.next_run_in_ms > 50) {
    EXPECT_TRUE(claim().empty());
  }
  db->transact([&](Transaction& tx) { tx.exec_sql("UPDATE @schema@.task SET run_at = now() WHERE kind = 'sms.send'"); });
  Task second = claim().at(0);
  EXPECT_EQ(second.attempt, 2);
  auto c2 = complete(second, OutcomeKind::retry, "provider 503 again");
  EXPECT_EQ(c2.state, TaskState::dead);
  EXPECT_TRUE(c2.alerted);
  EXPECT_EQ(count_tasks("payq.alert"), 2);
  EXPECT_EQ(get(second.id).error, "provider 503 again");
}

TEST_F(Outbox_, UnknownIsRetriedWithTheSameKeyThenNeedsReview) {
  TaskSpec s = spec();
  s.attempt_max = 2;
  s.idempotency_key = "payout-99";
  enqueue(s);
  Task first = claim().at(0);
  EXPECT_EQ(first.idempotency_key, "payout-99");
  EXPECT_EQ(complete(first, OutcomeKind::unknown, "timeout after sending").state, TaskState::pending);
  Task second = claim().at(0);
  EXPECT_EQ(second.idempotency_key, "payout-99");
  EXPECT_EQ(complete(second, OutcomeKind::unknown, "timeout again").state, TaskState::needs_review);
}

TEST_F(Outbox_, HeldTasksRunOnlyAfterARecordedRelease) {
  TaskSpec s = spec();
  s.held = true;
  auto created = enqueue(s);
  EXPECT_TRUE(claim().empty());
  db->transact([&](Transaction& tx) { Outbox(tx).task_release(created.task_id, "ops:carol", "approved"); });
  EXPECT_EQ(claim().size(), 1u);
  EXPECT_EQ(db->transact([&](Transaction& tx) {
              return tx.exec_sql("SELECT count(*) AS n FROM @schema@.task_action WHERE action = 'release'").i64(0, "n");
            }),
            1);
}

TEST_F(Outbox_, OperatorResendsADeadTask) {
  enqueue(spec());
  complete(claim().at(0), OutcomeKind::fail, "invalid number");
  const auto id = db->transact([&](Transaction& tx) { return Outbox(tx).tasks_list(std::string("dead"), std::nullopt, 0, 10); }).at(0).id;
  db->transact([&](Transaction& tx) { Outbox(tx).task_retry(id, "ops:dave", "number fixed"); });
  Task again = claim().at(0);
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.attempt, 2);
}

TEST_F(Outbox_, ConcurrencyLimitHoldsAcrossClaimers) {
  db->transact([&](Transaction& tx) {
    QueueConfig q;
    q.name = "limited";
    q.concurrency_max = 3;
    Outbox(tx).queue_configure(q);
  });
  for (int i = 0; i < 20; ++i) enqueue(spec("x", "limited"));
  std::atomic<int> claimed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] { claimed += static_cast<int>(claim("limited", 10, "w" + std::to_string(t)).size()); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(claimed.load(), 3);
}

TEST_F(Outbox_, RateAndAmountLimitsHold) {
  db->transact([&](Transaction& tx) {
    QueueConfig q;
    q.name = "rated";
    q.rate_count_max = 4;
    q.rate_window_ms = 3'600'000;
    Outbox(tx).queue_configure(q);
    QueueConfig m;
    m.name = "money";
    m.amount_max_minor = 10'000;
    m.amount_currency = "CNY";
    m.amount_window_ms = 3'600'000;
    Outbox(tx).queue_configure(m);
  });
  for (int i = 0; i < 10; ++i) enqueue(spec("x", "rated"));
  auto first = claim("rated", 10);
  EXPECT_EQ(first.size(), 4u);
  for (const auto& t : first) complete(t, OutcomeKind::success);
  EXPECT_TRUE(claim("rated", 10).empty());  // the window is used up, though nothing runs
  for (std::int64_t amount : {6000, 3000, 2000, 1000}) {
    TaskSpec s = spec("payout", "money");
    s.amount_minor = amount;
    s.currency = "CNY";
    enqueue(s);
  }
  auto money = claim("money", 10);
  std::int64_t total = 0;
  for (const auto& t : money) total += *t.amount_minor;
  EXPECT_EQ(total, 10'000);  // 6000 + 3000 + 1000; the 2000 would exceed
  EXPECT_EQ(money.size(), 3u);
}

// Windows longer than the two days starts used to be kept for, and longer
// than a SQL integer of milliseconds (about 24.8 days), up to 366 days.
TEST_F(Outbox_, LongRateAndAmountWindowsHoldAndAreBounded) {
  constexpr std::int64_t day_ms = 24LL * 3600 * 1000;
  db->transact([&](Transaction& tx) {
    QueueConfig q;
    q.name = "monthly";
    q.rate_count_max = 2;
    q.rate_window_ms = 30 * day_ms;
    Outbox(tx).queue_configure(q);
    QueueConfig m;
    m.name = "quarterly";
    m.amount_max_minor = 10'000;
    m.amount_currency = "CNY";
    m.amount_window_ms = 90 * day_ms;
    Outbox(tx).queue_configure(m);
  });
  QueueConfig too_long;
  too_long.name = "yearly";
  too_long.rate_count_max = 1;
  too_long.rate_window_ms = 367 * day_ms;
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).queue_configure(too_long); }), InvalidArgument);
  const auto overview = db->transact([](Transaction& tx) { return Outbox(tx).queues_overview(); });
  for (const auto& q : overview) {
    if (q.name == "monthly") {
      EXPECT_EQ(q.rate_window_ms, 30 * day_ms);
    }
    if (q.name == "quarterly") {
      EXPECT_EQ(q.amount_window_ms, 90 * day_ms);
    }
  }

  for (int i = 0; i < 3; ++i) enqueue(spec("x", "monthly"));
  auto first = claim("monthly", 10);
  ASSERT_EQ(first.size(), 2u);
  for (const auto& t : first) complete(t, OutcomeKind::success);
  // Ten days later the starts still count: pruning keeps them for the window.
  db->transact([](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.queue_start SET started_at = now() - interval '10 days' WHERE queue = 'monthly'");
  });
  db->transact([](Transaction& tx) { return Outbox(tx).prune(0, 100); });
  EXPECT_TRUE(claim("monthly", 10).empty());
  // Past the window they are pruned, and the queue runs again.
  db->transact([](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.queue_start SET started_at = now() - interval '31 days' WHERE queue = 'monthly'");
  });
  db->transact([](Transaction& tx) { return Outbox(tx).prune(0, 100); });
  EXPECT_EQ(count("queue_start"), 0);
  EXPECT_EQ(claim("monthly", 10).size(), 1u);
}

TEST_F(Outbox_, PartitionKeySerializes) {
  for (int i = 0; i < 3; ++i) {
    TaskSpec s = spec("ledger.sync", "p");
    s.partition_key = "account:7";
    enqueue(s);
  }
  TaskSpec other = spec("ledger.sync", "p");
  other.partition_key = "account:8";
  enqueue(other);
  auto batch = claim("p", 10);
  ASSERT_EQ(batch.size(), 2u);  // one per partition
  EXPECT_NE(batch[0].partition_key, batch[1].partition_key);
  EXPECT_TRUE(claim("p", 10).empty());
  complete(batch[0], OutcomeKind::success);
  EXPECT_EQ(claim("p", 10).size(), 1u);
}

TEST_F(Outbox_, PausedQueueIsNotClaimedUntilResumed) {
  enqueue(spec("x", "q1"));
  db->transact([&](Transaction& tx) { Outbox(tx).queue_pause("q1", true); });
  EXPECT_TRUE(claim("q1").empty());
  db->transact([&](Transaction& tx) { Outbox(tx).queue_pause("q1", false); });
  EXPECT_EQ(claim("q1").size(), 1u);
  enqueue(spec("x", "q2"));
  db->transact([&](Transaction& tx) { Outbox(tx).queue_pause_until("q2", 3'600'000); });
  EXPECT_TRUE(claim("q2").empty());
}

TEST_F(Outbox_, ExpiredLeaseIsRescuedAsUnknownAndRetriedWithTheSameKey) {
  TaskSpec s = spec("payout");
  s.timeout_ms = 1;
  enqueue(s);
  Task first = claim().at(0);
  db->transact([](Transaction& tx) { tx.exec_sql("SELECT pg_sleep(0.01)"); });
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).leases_rescue(100); }), 1);
  EXPECT_THROW(complete(first, OutcomeKind::success), LeaseLost);  // the zombie cannot complete
  db->transact([&](Transaction& tx) { tx.exec_sql("UPDATE @schema@.task SET run_at = now()"); });
  Task second = claim().at(0);
  EXPECT_EQ(second.idempotency_key, first.idempotency_key);
  auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(first.id); });
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, "unknown");
}

TEST_F(Outbox_, GiveBackReturnsAnUnstartedTask) {
  enqueue(spec());
  Task task = claim().at(0);
  db->transact([&](Transaction& tx) { Outbox(tx).give_back(task.id, *task.lease_token); });
  Task again = get(task.id);
  EXPECT_EQ(again.state, TaskState::pending);
  EXPECT_EQ(again.attempt, 0);
}

TEST_F(Outbox_, ManyClaimersNeverShareATask) {
  for (int i = 0; i < 300; ++i) enqueue(spec("x", "busy"));
  std::mutex mutex;
  std::map<std::int64_t, int> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 100; ++round) {
        auto batch = claim("busy", 7, "w" + std::to_string(t));
        if (batch.empty()) return;
        for (const auto& task : batch) {
          {
            std::lock_guard<std::mutex> guard(mutex);
            ++seen[task.id];
          }
          complete(task, OutcomeKind::success);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen.size(), 300u);
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << "task " << id;
}

TEST_F(Outbox_, PruneKeepsUniqueKeysAndAttempts) {
  TaskSpec s = spec();
  s.unique_key = "withdraw:wk-1";
  auto created = enqueue(s);
  complete(claim().at(0), OutcomeKind::success);
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).prune(0, 100); }), 1);
  EXPECT_THROW(get(created.task_id), UnknownTask);
  auto again = enqueue(s);  // a week later: still recognised
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.task_id, created.task_id);
  EXPECT_EQ(db->transact([&](Transaction& tx) { return Outbox(tx).attempts(created.task_id); }).size(), 1u);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

class Cron_ : public Outbox_ {};

TEST_F(Cron_, BadEntriesAreRejected) {
  auto set = [&](const std::string& schedule, const std::string& zone) {
    db->transact([&](Transaction& tx) { Outbox(tx).cron_set({"report", schedule, zone, "default", "report.daily", "{}"}); });
  };
  EXPECT_THROW(set("61 * * * *", "UTC"), InvalidArgument);
  EXPECT_THROW(set("* * * *", "UTC"), InvalidArgument);
  EXPECT_THROW(set("* * * * *", "Mars/Olympus"), InvalidArgument);
  set("0 9 * * MON-FRI", "Asia/Shanghai");
  auto entries = db->transact([&](Transaction& tx) { return Outbox(tx).cron_list(); });
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].time_zone, "Asia/Shanghai");
}

TEST_F(Cron_, EachSlotFiresOnceAcrossConcurrentFirers) {
  db->transact([&](Transaction& tx) { Outbox(tx).cron_set({"tick", "* * * * *", "Asia/Shanghai", "default", "tick", "{}"}); });
  // Pretend the entry was created two minutes ago, so the current minute is due.
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.cron_entry SET created_at = now() - interval '2 minutes'");
  });
  std::atomic<std::int64_t> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] { fired += db->transact([](Transaction& tx) { return Outbox(tx).cron_fire(); }); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fired.load(), 1);
  EXPECT_EQ(count_tasks("tick"), 1);
  // Firing again in the same minute does nothing.
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).cron_fire(); }), 0);
}

TEST_F(Cron_, ANewEntryDoesNotFireSlotsFromBeforeItExisted) {
  db->transact([&](Transaction& tx) { Outbox(tx).cron_set({"yearly", "0 0 1 1 *", "UTC", "default", "y", "{}"}); });
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).cron_fire(); }), 0);
  // Not even the minute it was created in, which began before it existed.
  db->transact([&](Transaction& tx) { Outbox(tx).cron_set({"minutely", "* * * * *", "UTC", "default", "m", "{}"}); });
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.cron_entry SET created_at = date_trunc('minute', now()) + interval '1 second'");
  });
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).cron_fire(); }), 0);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

TEST_F(Outbox_, AnAlertNeverRaisesAnAlert) {
  TaskSpec s = spec("payq.alert", "payq.alerts");
  s.attempt_max = 1;
  enqueue(s);
  EXPECT_EQ(complete(claim("payq.alerts").at(0), OutcomeKind::fail, "no alert handler").state, TaskState::dead);
  EXPECT_EQ(count_tasks("payq.alert"), 1);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

// claim_plain is one statement, run by the worker as its own transaction:
// it claims from a plain queue, takes nothing from a paused one, and hands
// a limited queue (or one with partitions) to the locked path.
TEST_F(Outbox_, PlainClaimIsOneStatementAndDefersToTheLockedPath) {
  enqueue(spec("sms.send", "plain"));
  enqueue(spec("sms.send", "limited"));
  db->transact([](Transaction& tx) {
    QueueConfig limited;
    limited.name = "limited";
    limited.concurrency_max = 1;
    Outbox(tx).queue_configure(limited);
  });
  auto plain_claim = [&](const std::string& queue) {
    auto lease = db->acquire();
    SingleStatement alone(*lease);
    return Outbox(alone).claim_plain({queue, "w1", 10});
  };
  const auto limited = plain_claim("limited");
  EXPECT_FALSE(limited.has_value());
  db->transact([](Transaction& tx) { Outbox(tx).queue_pause("plain", true); });
  ASSERT_TRUE(plain_claim("plain").has_value());
  EXPECT_TRUE(plain_claim("plain")->empty());
  db->transact([](Transaction& tx) { Outbox(tx).queue_pause("plain", false); });
  const auto claimed = plain_claim("plain");
  ASSERT_TRUE(claimed.has_value());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ(claimed->at(0).state, TaskState::running);
  // Committed on its own: another transaction sees the task running.
  EXPECT_EQ(get(claimed->at(0).id).state, TaskState::running);
  // The locked path still claims the limited queue, within its limit.
  const auto locked = db->transact([](Transaction& tx) { return Outbox(tx).claim_limited({"limited", "w1", 10}); });
  EXPECT_EQ(locked.size(), 1u);
}

// Completions fence on the lease token alone; that is sound because the
// table refuses a token on a task that is not running, and a running task
// without one.
TEST_F(Outbox_, LeaseTokenIsSetExactlyWhileRunning) {
  enqueue(spec());
  const Task task = claim().at(0);
  const std::string id = std::to_string(task.id);
  EXPECT_THROW(db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.task SET state = 'pending' WHERE id = $1", {id});
  }), DatabaseError);
  EXPECT_THROW(db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.task SET lease_token = NULL WHERE id = $1", {id});
  }), DatabaseError);
  EXPECT_EQ(complete(task, OutcomeKind::success).state, TaskState::succeeded);
  Task late = task;  // the same lease, after the completion: fenced out
  EXPECT_THROW(complete(late, OutcomeKind::success), LeaseLost);
}

TEST_F(Outbox_, SingleStatementExecutorRunsOneStatementOnly) {
  auto lease = db->acquire();
  SingleStatement alone(*lease);
  alone.exec(Statement{"test_single_one", "SELECT 1 AS one"}, {});
  EXPECT_THROW(alone.exec(Statement{"test_single_two", "SELECT 2 AS two"}, {}), std::logic_error);
  EXPECT_THROW(alone.savepoint_begin(), std::logic_error);
}

}  // namespace
}  // namespace payq
