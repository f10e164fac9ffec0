#include <gtest/gtest.h>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class DeferredCredit : public testing::LedgerTest {
 protected:
  Account open_hot(const std::string& owner) {
    return with_ledger([&](Ledger& l) {
      AccountOpen r;
      r.owner = owner;
      r.currency = "CNY";
      r.deferred_credit = true;
      return l.account_open(r);
    });
  }
  void transfer_fee(const Account& a, const Account& b, const Account& fees, const std::string& key) {
    with_ledger([&](Ledger& l) {
      TransferRequest r;
      r.key = key;
      r.source_id = a.id;
      r.target_id = b.id;
      r.amount_minor = 100;
      Fee fee;
      fee.fixed_minor = 3;
      r.fee = fee;
      r.fee_account_id = fees.id;
      return l.transfer(r);
    });
  }
};

TEST_F(DeferredCredit, CreditsWaitAsPendingAndFoldIntoTheJournal) {
  Account a = open("a"), b = open("b"), fees = open_hot("fees");
  fund(a, 1000);
  for (int i = 0; i < 4; ++i) transfer_fee(a, b, fees, "t" + std::to_string(i));
  Account hot = account(fees.id);
  EXPECT_EQ(hot.balance_minor, 0);
  EXPECT_EQ(hot.pending_minor, 12);
  expect_audit_clean();  // pending credits count toward every sum
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.pending_fold(fees.id, 3); }), 3);
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.pending_fold(fees.id, 3); }), 1);
  hot = account(fees.id);
  EXPECT_EQ(hot.balance_minor, 12);
  EXPECT_EQ(hot.pending_minor, 0);
  auto history = with_ledger([&](Ledger& l) { return l.history(fees.id, 0, 10); });
  ASSERT_EQ(history.size(), 4u);
  EXPECT_EQ(*history.back().balance_after, 12);
  EXPECT_EQ(*history.back().seq, 4);
  expect_audit_clean();
}

TEST_F(DeferredCredit, DebitingAHotAccountFoldsItFirst) {
  Account a = open("a"), b = open("b"), fees = open_hot("fees"), payout = open("payout");
  fund(a, 1000);
  transfer_fee(a, b, fees, "t1");
  transfer_fee(a, b, fees, "t2");
  // The hot account spends its (still pending) income: folded, then debited.
  transfer(fees.id, payout.id, 6, "sweep");
  Account hot = account(fees.id);
  EXPECT_EQ(hot.balance_minor, 0);
  EXPECT_EQ(hot.pending_minor, 0);
  EXPECT_THROW(transfer(fees.id, payout.id, 1, "overdraw"), InsufficientFunds);
  expect_audit_clean();
}

// A fold is written only with the operation that needs it: a replay, or a
// refusal inside the caller's transaction, leaves the hot account as it was.
TEST_F(DeferredCredit, ReplaysAndRefusalsDoNotFold) {
  Account a = open("a"), b = open("b"), fees = open_hot("fees"), payout = open("payout");
  fund(a, 1000);
  transfer_fee(a, b, fees, "t1");
  transfer(fees.id, payout.id, 2, "pay");  // folds 3, journals -2
  transfer_fee(a, b, fees, "t2");          // 3 pending again
  const Account before = account(fees.id);
  ASSERT_EQ(before.pending_minor, 3);

  EXPECT_TRUE(transfer(fees.id, payout.id, 2, "pay").replayed);
  Account after = account(fees.id);
  EXPECT_EQ(after.pending_minor, 3);
  EXPECT_EQ(after.seq, before.seq);

  HoldRequest hold;
  hold.key = "h";
  hold.account_id = fees.id;
  hold.amount_minor = 1;
  with_ledger([&](Ledger& l) { return l.hold(hold); });  // folds 3
  transfer_fee(a, b, fees, "t3");                         // 3 pending again
  const Account held = account(fees.id);
  with_ledger([&](Ledger& l) { return l.hold(hold); });  // replay
  after = account(fees.id);
  EXPECT_EQ(after.pending_minor, held.pending_minor);
  EXPECT_EQ(after.seq, held.seq);

  // Refused in a transaction that commits: nothing of the fold stays.
  db->transact([&](Transaction& tx) {
    Ledger l(tx);
    TransferRequest r;
    r.key = "too-much";
    r.source_id = fees.id;
    r.target_id = payout.id;
    r.amount_minor = 1'000'000;
    EXPECT_THROW(l.transfer(r), InsufficientFunds);
    HoldRequest big = hold;
    big.key = "too-much-hold";
    big.amount_minor = 1'000'000;
    EXPECT_THROW(l.hold(big), InsufficientFunds);
    return 0;
  });
  after = account(fees.id);
  EXPECT_EQ(after.pending_minor, held.pending_minor);
  EXPECT_EQ(after.seq, held.seq);
  expect_audit_clean();
}

TEST_F(DeferredCredit, ReversalTakesBackAPendingFee) {
  Account a = open("a"), b = open("b"), fees = open_hot("fees");
  fund(a, 1000);
  transfer_fee(a, b, fees, "t1");
  auto tx = with_ledger([](Ledger& l) { return *l.transaction_find("t1"); });
  EXPECT_FALSE(tx.entries.back().seq.has_value());  // the fee leg is pending
  with_ledger([&](Ledger& l) {
    ReverseRequest r;
    r.key = "refund";
    r.transaction_id = tx.id;
    return l.reverse(r);
  });
  EXPECT_EQ(account(a.id).balance_minor, 1000);
  EXPECT_EQ(account(fees.id).balance_minor + account(fees.id).pending_minor, 0);
  expect_audit_clean();
}

}  // namespace
}  // namespace payq
