// Settlement (cpp/src/outbox_settle.cpp): what a task does to the ledger,
// what is checked when it is enqueued, who may touch its hold while it is
// live, and what happens when the settlement itself cannot run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

using testing::Settlement_;

TEST_F(Settlement_, SuccessCapturesTheHold) {
  auto [hold, task] = withdraw(3000, "wd-1");
  complete(claim("provider-a").at(0), OutcomeKind::success);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  EXPECT_EQ(account(wallet.id).balance_minor, 7000);
  EXPECT_EQ(account(clearing.id).balance_minor, 3000);
  expect_audit_clean();
}

TEST_F(Settlement_, FailReleasesTheHold) {
  auto [hold, task] = withdraw(3000, "wd-2");
  EXPECT_EQ(complete(claim("provider-a").at(0), OutcomeKind::fail, "bad account").state, TaskState::dead);
  EXPECT_EQ(hold_status(hold), HoldStatus::released);
  EXPECT_EQ(account(wallet.id).available_minor(), 10000);
  expect_audit_clean();
}

TEST_F(Settlement_, UnknownNeverTouchesTheHoldEvenWhenExhausted) {
  auto [hold, task] = withdraw(3000, "wd-3", 1);
  EXPECT_EQ(complete(claim("provider-a").at(0), OutcomeKind::unknown, "timeout").state, TaskState::needs_review);
  EXPECT_EQ(hold_status(hold), HoldStatus::active);
  EXPECT_EQ(account(wallet.id).held_minor, 3000);
  // An operator looked at the provider: it was paid.
  db->transact([&](Transaction& tx) { Outbox(tx).task_resolve(task.task_id, true, "ops:alice", "provider says paid"); });
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  EXPECT_EQ(get(task.task_id).state, TaskState::succeeded);
  expect_audit_clean();
}

TEST_F(Settlement_, CancelOfAPendingTaskReleasesAndRetryOfASettledTaskIsRefused) {
  auto [hold, task] = withdraw(3000, "wd-4");
  db->transact([&](Transaction& tx) { Outbox(tx).task_cancel(task.task_id, "ops:bob", "customer cancelled"); });
  EXPECT_EQ(hold_status(hold), HoldStatus::released);
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).task_retry(task.task_id, "ops:bob", ""); }),
               InvalidState);
}

// A withdrawal whose payout is captured into `payouts`, which is closed
// after the enqueue: the settlement will fail.
class SettlementFailure_ : public Settlement_ {
 protected:
  std::pair<Hold, EnqueueResult> withdraw_then_close(const Account& payouts, const std::string& key,
                                                     std::int64_t amount) {
    auto made = db->transact([&](Transaction& tx) {
      HoldRequest h;
      h.key = key;
      h.account_id = wallet.id;
      h.amount_minor = amount;
      Hold hold = Ledger(tx).hold(h);
      TaskSpec s = spec("payout", "provider-a");
      s.settlement.hold_id = hold.id;
      s.settlement.capture_account_id = payouts.id;
      return std::make_pair(hold, Outbox(tx).enqueue(s));
    });
    with_ledger([&](Ledger& l) { return l.account_close(payouts.id); });
    return made;
  }
};

// The story of issue 18: a withdrawal's hold expires while its payout is
// still queued. The hold must stay held (the wallet cannot spend it twice),
// nobody else may release or capture it, and the payout settles it once.
TEST_F(Settlement_, HoldPastItsExpiryStaysHeldWhileItsPayoutIsLive) {
  auto [hold, task] = withdraw(6000, "wd-9", 3, 1000);
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.hold_get(hold.id); }).task_id, task.task_id);
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.hold SET expires_at = now() - interval '1 minute' WHERE id = $1",
                {std::to_string(hold.id)});
  });
  EXPECT_EQ(with_ledger([](Ledger& l) { return l.holds_expire(100); }), 0);
  EXPECT_EQ(hold_status(hold), HoldStatus::active);
  EXPECT_EQ(account(wallet.id).available_minor(), 4000);

  // The same 60.00 cannot leave again by a transfer ...
  const Account other = open("user:2");
  EXPECT_THROW(transfer(wallet.id, other.id, 6000, "spend-again"), InsufficientFunds);
  // ... nor be released or captured by anyone but the task.
  try {
    with_ledger([&](Ledger& l) { return l.release(ReleaseRequest{"steal-release", hold.id, std::nullopt}); });
    ADD_FAILURE() << "release by another caller was accepted";
  } catch (const HoldInUse& e) {
    EXPECT_EQ(e.task_id(), task.task_id);
    EXPECT_NE(std::string(e.what()).find("task " + std::to_string(task.task_id)), std::string::npos) << e.what();
  }
  EXPECT_THROW(with_ledger([&](Ledger& l) {
                 CaptureRequest c;
                 c.key = "steal-capture";
                 c.hold_id = hold.id;
                 c.target_id = other.id;
                 return l.capture(c);
               }),
               HoldInUse);

  // The payout succeeds and settles the hold, once.
  EXPECT_EQ(complete(claim("provider-a").at(0), OutcomeKind::success).state, TaskState::succeeded);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  EXPECT_EQ(account(wallet.id).balance_minor, 4000);
  EXPECT_EQ(account(clearing.id).balance_minor, 6000);
  expect_audit_clean();
}

TEST_F(Settlement_, HoldOfAFinishedTaskExpiresAsUsual) {
  auto [hold, task] = withdraw(3000, "wd-10", 1, 1000);
  // Unknown at the last attempt: needs_review, still live, so no expiry.
  complete(claim("provider-a").at(0), OutcomeKind::unknown, "timeout");
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.hold SET expires_at = now() - interval '1 minute' WHERE id = $1",
                {std::to_string(hold.id)});
  });
  EXPECT_EQ(with_ledger([](Ledger& l) { return l.holds_expire(100); }), 0);
  // Resolved as not applied: the failure side releases it.
  db->transact([&](Transaction& tx) { Outbox(tx).task_resolve(task.task_id, false, "ops:alice", "never paid"); });
  EXPECT_EQ(hold_status(hold), HoldStatus::released);

  // A hold whose task was cancelled and then re-held by hand: its own
  // expiry applies once no live task owns it.
  Hold loose = with_ledger([&](Ledger& l) {
    HoldRequest h;
    h.key = "loose";
    h.account_id = wallet.id;
    h.amount_minor = 500;
    h.expires_in_ms = 1000;
    return l.hold(h);
  });
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.hold SET expires_at = now() - interval '1 minute' WHERE id = $1",
                {std::to_string(loose.id)});
  });
  EXPECT_EQ(with_ledger([](Ledger& l) { return l.holds_expire(100); }), 1);
  expect_audit_clean();
}

TEST_F(Settlement_, EnqueueRefusesAHoldItCannotSettleAndWritesNothing) {
  const Account usd = open("usd-clearing", "USD", true);
  Hold free_hold = with_ledger([&](Ledger& l) {
    HoldRequest h;
    h.key = "free";
    h.account_id = wallet.id;
    h.amount_minor = 1000;
    return l.hold(h);
  });
  Hold released = with_ledger([&](Ledger& l) {
    HoldRequest h;
    h.key = "gone";
    h.account_id = wallet.id;
    h.amount_minor = 1000;
    Hold made = l.hold(h);
    l.release(ReleaseRequest{"gone/release", made.id, std::nullopt});
    return made;
  });
  auto [owned, owner] = withdraw(1000, "wd-11");
  const std::int64_t tasks_before = count("task");
  auto settle = [&](std::int64_t hold_id, std::int64_t into) {
    TaskSpec s = spec("payout", "provider-a");
    s.settlement.hold_id = hold_id;
    s.settlement.capture_account_id = into;
    return enqueue(s);
  };
  EXPECT_THROW(settle(999999, clearing.id), InvalidArgument);
  EXPECT_THROW(settle(released.id, clearing.id), InvalidState);
  EXPECT_THROW(settle(free_hold.id, 999999), UnknownAccount);
  EXPECT_THROW(settle(free_hold.id, usd.id), CurrencyMismatch);
  try {
    settle(owned.id, clearing.id);
    ADD_FAILURE() << "a second task was given a hold a live task settles";
  } catch (const HoldInUse& e) {
    EXPECT_EQ(e.task_id(), owner.task_id);
  }
  // One hold, two tasks of one batch.
  EXPECT_THROW(db->transact([&](Transaction& tx) {
                 TaskSpec a = spec("payout", "provider-a");
                 a.settlement.hold_id = free_hold.id;
                 a.settlement.capture_account_id = clearing.id;
                 TaskSpec b = a;
                 b.payload_json = R"({"second":true})";
                 return Outbox(tx).enqueue_batch({a, b});
               }),
               InvalidArgument);
  // Past its expiry (maintenance has not run yet): refused too.
  db->transact([&](Transaction& tx) {
    tx.exec_sql("UPDATE @schema@.hold SET expires_at = now() - interval '1 minute' WHERE id = $1",
                {std::to_string(free_hold.id)});
  });
  EXPECT_THROW(settle(free_hold.id, clearing.id), InvalidState);
  EXPECT_EQ(count("task"), tasks_before);
  EXPECT_FALSE(with_ledger([&](Ledger& l) { return l.hold_get(free_hold.id); }).task_id.has_value());
}

TEST_F(Settlement_, ReplayOfAWithdrawalReturnsItsTaskEvenAfterSettlement) {
  auto [hold, task] = withdraw(2000, "wd-12");
  auto [hold_again, task_again] = withdraw(2000, "wd-12");
  EXPECT_EQ(hold_again.id, hold.id);
  EXPECT_EQ(task_again.task_id, task.task_id);
  EXPECT_FALSE(task_again.created);
  complete(claim("provider-a").at(0), OutcomeKind::success);
  auto [hold_late, task_late] = withdraw(2000, "wd-12");
  EXPECT_EQ(task_late.task_id, task.task_id);
  EXPECT_FALSE(task_late.created);
  EXPECT_EQ(count_tasks("payout"), 1);
  expect_audit_clean();
}

TEST_F(Settlement_, UniqueKeyReusedForADifferentRequestIsAConflict) {
  TaskSpec first = spec();
  first.unique_key = "sms-1";
  const EnqueueResult created = enqueue(first);
  EXPECT_EQ(enqueue(first).task_id, created.task_id);
  TaskSpec other = first;
  other.payload_json = R"({"to":"+86 139","text":"hi"})";
  try {
    enqueue(other);
    ADD_FAILURE() << "a different request under a taken unique key was accepted";
  } catch (const IdempotencyConflict& e) {
    EXPECT_NE(std::string(e.what()).find("task " + std::to_string(created.task_id)), std::string::npos);
  }
  // Scheduling is not the request: another priority or delay replays.
  TaskSpec later = first;
  later.priority = 5;
  later.delay_ms = 1000;
  EXPECT_EQ(enqueue(later).task_id, created.task_id);
  // The withdrawal's story: the same key with another hold (a new hold made
  // by a retried request with a different amount) is refused, and the
  // transaction that made that hold rolls back with it.
  withdraw(1000, "wd-13");
  const std::int64_t holds_before = count("hold");
  EXPECT_THROW(db->transact([&](Transaction& tx) {
                 HoldRequest h;
                 h.key = "wd-13/retried-hold";
                 h.account_id = wallet.id;
                 h.amount_minor = 1500;
                 TaskSpec s = spec("payout", "provider-a");
                 s.amount_minor = 1500;
                 s.currency = "CNY";
                 s.settlement.hold_id = Ledger(tx).hold(h).id;
                 s.settlement.capture_account_id = clearing.id;
                 s.unique_key = "wd-13";
                 return Outbox(tx).enqueue(s);
               }),
               IdempotencyConflict);
  EXPECT_EQ(count("hold"), holds_before);
  // Two different requests under one key in one batch; and a batch whose
  // taken key conflicts writes none of its other tasks.
  const std::int64_t tasks_before = count("task");
  TaskSpec fresh = spec();
  fresh.unique_key = "sms-2";
  TaskSpec fresh_other = fresh;
  fresh_other.kind = "sms.other";
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).enqueue_batch({fresh, fresh_other}); }),
               IdempotencyConflict);
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).enqueue_batch({fresh, other}); }),
               IdempotencyConflict);
  EXPECT_EQ(count("task"), tasks_before);
}

// A settlement that cannot run (here: the account the payout is captured
// into was closed meanwhile) never throws the provider's outcome away.
TEST_F(SettlementFailure_, KeepsTheOutcomeAndWaitsForAnOperator) {
  const Account payouts = open("payouts", "CNY", false);
  const Account suspense = open("suspense", "CNY", true);
  auto [hold, task] = withdraw_then_close(payouts, "wd-14", 2500);

  const Completion done = complete(claim("provider-a").at(0), OutcomeKind::success);
  EXPECT_EQ(done.state, TaskState::needs_review);
  EXPECT_TRUE(done.alerted);
  const Task reviewed = get(task.task_id);
  EXPECT_EQ(reviewed.state, TaskState::needs_review);
  EXPECT_EQ(nlohmann::json::parse(reviewed.result_json.value_or("null")), (nlohmann::json{{"provider_id", "p-1"}}));
  ASSERT_TRUE(reviewed.error.has_value());
  EXPECT_EQ(reviewed.error->rfind("settlement_failed", 0), 0u) << *reviewed.error;
  const auto attempts = db->transact([&](Transaction& tx) { return Outbox(tx).attempts(task.task_id); });
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, "success");
  const auto actions = db->transact([&](Transaction& tx) { return Outbox(tx).actions(task.task_id); });
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].action, "settlement_failed");
  EXPECT_EQ(count_tasks("payq.alert"), 1);
  // The money is still held: the wallet cannot spend it meanwhile.
  EXPECT_EQ(hold_status(hold), HoldStatus::active);
  EXPECT_EQ(account(wallet.id).available_minor(), 7500);

  // Resolving as applied the usual way meets the same closed account.
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).task_resolve(task.task_id, true, "ops:alice", ""); }),
               AccountClosed);
  // Settling "by hand" needs a note; capture into a suspense account works.
  ResolveRequest by_hand;
  by_hand.task_id = task.task_id;
  by_hand.applied = true;
  by_hand.actor = "ops:alice";
  by_hand.hold_release_manual = true;
  EXPECT_THROW(db->transact([&](Transaction& tx) { Outbox(tx).task_resolve(by_hand); }), InvalidArgument);
  ResolveRequest redirect;
  redirect.task_id = task.task_id;
  redirect.applied = true;
  redirect.actor = "ops:alice";
  redirect.note = "payouts account closed; parked for reconciliation";
  redirect.capture_account_id = suspense.id;
  db->transact([&](Transaction& tx) { Outbox(tx).task_resolve(redirect); });
  EXPECT_EQ(get(task.task_id).state, TaskState::succeeded);
  EXPECT_EQ(hold_status(hold), HoldStatus::captured);
  EXPECT_EQ(account(suspense.id).balance_minor, 2500);
  EXPECT_EQ(account(wallet.id).balance_minor, 7500);
  const auto after = db->transact([&](Transaction& tx) { return Outbox(tx).actions(task.task_id); });
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1].action, "resolve_applied_captured_into");
  expect_audit_clean();
}

TEST_F(SettlementFailure_, ResolvedByHandReleasesTheHoldWithTheNote) {
  const Account payouts = open("payouts", "CNY", false);
  auto [hold, task] = withdraw_then_close(payouts, "wd-15", 1000);
  EXPECT_EQ(complete(claim("provider-a").at(0), OutcomeKind::success).state, TaskState::needs_review);
  ResolveRequest by_hand;
  by_hand.task_id = task.task_id;
  by_hand.applied = true;
  by_hand.actor = "ops:bob";
  by_hand.note = "posted transfer 'adj-15' from the wallet to the bank account";
  by_hand.hold_release_manual = true;
  db->transact([&](Transaction& tx) {
    Outbox(tx).task_resolve(by_hand);
    // The operator's own adjustment, in the same transaction.
    TransferRequest adjustment;
    adjustment.key = "adj-15";
    adjustment.source_id = wallet.id;
    adjustment.target_id = clearing.id;
    adjustment.amount_minor = 1000;
    Ledger(tx).transfer(adjustment);
  });
  EXPECT_EQ(hold_status(hold), HoldStatus::released);
  EXPECT_EQ(account(wallet.id).balance_minor, 9000);
  EXPECT_EQ(account(wallet.id).held_minor, 0);
  const auto actions = db->transact([&](Transaction& tx) { return Outbox(tx).actions(task.task_id); });
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[1].action, "resolve_applied_settled_by_hand");
  EXPECT_EQ(actions[1].note, by_hand.note);
  expect_audit_clean();
}

// The failure side can fail too (a reversal someone already made in full):
// the task is dead as far as the provider goes, but waits for an operator.
TEST_F(Settlement_, FailureSideThatCannotRunWaitsForAnOperator) {
  const Account merchant = open("merchant");
  const LedgerTransaction paid = transfer(wallet.id, merchant.id, 800, "order-16");
  const EnqueueResult task = db->transact([&](Transaction& tx) {
    TaskSpec s = spec("notify", "provider-a");
    s.settlement.reverse_transaction_id = paid.id;
    return Outbox(tx).enqueue(s);
  });
  with_ledger([&](Ledger& l) {
    ReverseRequest r;
    r.key = "refund-16";
    r.transaction_id = paid.id;
    return l.reverse(r);
  });
  EXPECT_EQ(complete(claim("provider-a").at(0), OutcomeKind::fail, "rejected").state, TaskState::needs_review);
  EXPECT_EQ(get(task.task_id).error.value_or("").rfind("settlement_failed", 0), 0u);
  EXPECT_EQ(account(wallet.id).balance_minor, 10000);
  expect_audit_clean();
}

}  // namespace
}  // namespace payq
