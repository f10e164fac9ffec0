// Provider callbacks: each event once, settling its task exactly once, also
// when it races the worker's own result.
#include "payq/inbox.hpp"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"
#include "payq/outbox.hpp"

namespace payq {
namespace {

class Inbox_ : public testing::LedgerTest {
 protected:
  void SetUp() override {
    LedgerTest::SetUp();
    wallet = open("user:1");
    clearing = open("clearing", "CNY", true);
    fund(wallet, 10000);
  }
  // A withdrawal: hold plus payout task, as an application writes them.
  std::pair<Hold, Task> withdraw(const std::string& key, int attempt_max = 3) {
    return db->transact([&](Transaction& tx) {
      HoldRequest h;
      h.key = key;
      h.account_id = wallet.id;
      h.amount_minor = 3000;
      Hold hold = Ledger(tx).hold(h);
      TaskSpec s;
      s.kind = "payout";
      s.queue = "provider";
      s.attempt_max = attempt_max;
      s.idempotency_key = key;
      s.settlement.hold_id = hold.id;
      s.settlement.capture_account_id = clearing.id;
      const auto task_id = Outbox(tx).enqueue(s).task_id;
      return std::make_pair(hold, Outbox(tx).task_get(task_id));
    });
  }
  Task claim() {
    return db->transact([&](Transaction& tx) { return Outbox(tx).claim({"provider", "w1", 1}).at(0); });
  }
  Completion complete(const Task& task, OutcomeKind kind) {
    return db->transact([&](Transaction& tx) {
      CompleteRequest r;
      r.task_id = task.id;
      r.lease_token = *task.lease_token;
      r.attempt = task.attempt;
      r.outcome.kind = kind;
      r.outcome.retry_after_ms = 0;
      r.worker_id = "w1";
      return Outbox(tx).complete(r);
    });
  }
  CallbackResult callback(const std::string& event_id, const std::string& key, bool applied) {
    return db->transact([&](Transaction& tx) {
      return Inbox(tx).receive({"fake", event_id, key, applied, R"({"status":"reported"})"});
    });
  }
  HoldStatus hold_status(const Hold& h) {
    return with_ledger([&](Ledger& l) { return l.hold_get(h.id); }).status;
  }
  Task get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }
  std::int64_t count(const std::string& sql) {
    return db->transact([&](Transaction& tx) { return tx.exec_sql(sql, {}).i64(0, "n"); });
  }
  Account wallet, clearing;
};

TEST_F(Inbox_, EarlyCallbackSettlesARunningTaskAndFencesTheWorkerOut) {
  auto [hold, task] = withdraw("wd-early");
  const Task running = claim();
  const CallbackResult r = callback("evt-1", "wd-early", true);
  EXPECT_EQ(r.effect, CallbackEffect::settled_success);
  EXPECT_EQ(r.task_id, task.id);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  // The worker's own success arrives late: its lease is gone, nothing changes.
  EXPECT_THROW(complete(running, OutcomeKind::success), LeaseLost);
  EXPECT_EQ(account(wallet.id).balance_minor, 7000);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  EXPECT_EQ(get(task.id).state, TaskState::succeeded);
  // The attempt is on record, completed by the callback.
  EXPECT_EQ(count("SELECT count(*) AS n FROM @schema@.task_attempt WHERE worker_id = 'callback:fake' "
                  "AND outcome = 'success'"),
            1);
  expect_audit_clean();
}

TEST_F(Inbox_, DuplicateAndLateCallbacksChangeNothing) {
  auto [hold, task] = withdraw("wd-late");
  complete(claim(), OutcomeKind::success);
  EXPECT_EQ(callback("evt-2", "wd-late", true).effect, CallbackEffect::already_settled);
  EXPECT_EQ(callback("evt-2", "wd-late", true).effect, CallbackEffect::duplicate);
  EXPECT_EQ(count("SELECT count(*) AS n FROM @schema@.inbox_event"), 1);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  expect_audit_clean();
}

TEST_F(Inbox_, FailureCallbackResolvesAnUnknownAttemptAndReleasesTheHold) {
  auto [hold, task] = withdraw("wd-unknown", 1);
  EXPECT_EQ(complete(claim(), OutcomeKind::unknown).state, TaskState::needs_review);
  const CallbackResult r = callback("evt-3", "wd-unknown", false);
  EXPECT_EQ(r.effect, CallbackEffect::settled_failure);
  EXPECT_EQ(get(task.id).state, TaskState::dead);
  EXPECT_EQ(hold_status(hold), HoldStatus::released);
  EXPECT_EQ(account(wallet.id).available_minor(), 10000);
  expect_audit_clean();
}

TEST_F(Inbox_, ContradictingCallbackRaisesAnAlertAndChangesNothing) {
  auto [hold, task] = withdraw("wd-conflict");
  complete(claim(), OutcomeKind::fail);  // released
  const CallbackResult r = callback("evt-4", "wd-conflict", true);
  EXPECT_EQ(r.effect, CallbackEffect::conflict);
  EXPECT_EQ(get(task.id).state, TaskState::dead);
  EXPECT_EQ(hold_status(hold), HoldStatus::released);
  EXPECT_EQ(count("SELECT count(*) AS n FROM @schema@.task WHERE kind = 'payq.alert' "
                  "AND payload->>'reason' = 'callback_conflict'"),
            1);
}

TEST_F(Inbox_, UnknownKeyAndNeverSentTasksAreRecordedOnly) {
  EXPECT_EQ(callback("evt-5", "no-such-key", true).effect, CallbackEffect::no_task);
  auto [hold, task] = withdraw("wd-never-sent");
  EXPECT_EQ(callback("evt-6", "wd-never-sent", true).effect, CallbackEffect::ignored);
  EXPECT_EQ(get(task.id).state, TaskState::pending);
  EXPECT_EQ(hold_status(hold), HoldStatus::active);
  EXPECT_EQ(count("SELECT count(*) AS n FROM @schema@.inbox_event"), 2);
}

TEST_F(Inbox_, BadInputIsRefusedWithNothingWritten) {
  auto [hold, task] = withdraw("wd-bad");
  claim();
  auto receive = [&](CallbackEvent e) { db->transact([&](Transaction& tx) { Inbox(tx).receive(e); }); };
  EXPECT_THROW(receive({"", "e", "wd-bad", true, "{}"}), InvalidArgument);
  EXPECT_THROW(receive({"fake", "", "wd-bad", true, "{}"}), InvalidArgument);
  EXPECT_THROW(receive({"fake", std::string(256, 'e'), "wd-bad", true, "{}"}), InvalidArgument);
  EXPECT_THROW(receive({"fake", "e", "", true, "{}"}), InvalidArgument);
  EXPECT_THROW(receive({"fake", "e", "wd-bad", true, "{not json"}), InvalidArgument);
  EXPECT_EQ(count("SELECT count(*) AS n FROM @schema@.inbox_event"), 0);
  EXPECT_EQ(get(task.id).state, TaskState::running);
}

TEST_F(Inbox_, ConcurrentDeliveriesOfOneEventSettleOnce) {
  auto [hold, task] = withdraw("wd-race");
  claim();
  std::vector<std::thread> threads;
  std::vector<CallbackEffect> effects(6);
  for (std::size_t i = 0; i < effects.size(); ++i) {
    threads.emplace_back([&, i] { effects[i] = callback("evt-race", "wd-race", true).effect; });
  }
  for (auto& t : threads) t.join();
  int settled = 0, duplicates = 0;
  for (CallbackEffect e : effects) {
    settled += e == CallbackEffect::settled_success;
    duplicates += e == CallbackEffect::duplicate;
  }
  EXPECT_EQ(settled, 1);
  EXPECT_EQ(duplicates, 5);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  expect_audit_clean();
}

TEST_F(Inbox_, PruneRemovesOnlyOldEvents) {
  callback("evt-old", "nothing", true);
  EXPECT_EQ(db->transact([&](Transaction& tx) { return Inbox(tx).prune(60'000, 100); }), 0);
  EXPECT_EQ(db->transact([&](Transaction& tx) { return Inbox(tx).prune(0, 100); }), 1);
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Inbox(tx).prune(-1, 100); }), InvalidArgument);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

// A task without a chosen key is known to the provider as 'task:<id>',
// which is not indexed (006_outbox_lean.sql): the inbox finds it by id. A
// chosen key of the same form (naming no task's id) is found through the
// index of chosen keys.
TEST_F(Inbox_, DefaultAndChosenKeysBothFindTheirTask) {
  const auto plain_id = db->transact([](Transaction& tx) {
    TaskSpec s;
    s.kind = "payout";
    s.queue = "provider";
    return Outbox(tx).enqueue(s).task_id;
  });
  const std::string plain_key = "task:" + std::to_string(plain_id);
  EXPECT_EQ(get(plain_id).idempotency_key, plain_key);
  const Task running = claim();
  ASSERT_EQ(running.id, plain_id);
  EXPECT_EQ(callback("evt-default", plain_key, true).effect, CallbackEffect::settled_success);
  EXPECT_EQ(get(plain_id).state, TaskState::succeeded);

  auto [hold, chosen] = withdraw("task:999999999");
  claim();
  EXPECT_EQ(callback("evt-chosen", "task:999999999", true).effect, CallbackEffect::settled_success);
  EXPECT_EQ(get(chosen.id).state, TaskState::succeeded);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  EXPECT_EQ(callback("evt-none", "task:888888888", true).effect, CallbackEffect::no_task);
}

}  // namespace
}  // namespace payq
