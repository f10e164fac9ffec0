#include <gtest/gtest.h>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class Holds : public testing::LedgerTest {
 protected:
  Hold hold(std::int64_t account, std::int64_t amount, const std::string& key,
            std::optional<std::int64_t> expires_in_ms = std::nullopt) {
    return with_ledger([&](Ledger& l) {
      HoldRequest r;
      r.key = key;
      r.account_id = account;
      r.amount_minor = amount;
      r.expires_in_ms = expires_in_ms;
      return l.hold(r);
    });
  }
  LedgerTransaction capture(const Hold& h, std::int64_t target, std::optional<std::int64_t> amount,
                            const std::string& key) {
    return with_ledger([&](Ledger& l) {
      CaptureRequest r;
      r.key = key;
      r.hold_id = h.id;
      r.target_id = target;
      r.amount_minor = amount;
      return l.capture(r);
    });
  }
  Hold release(const Hold& h, const std::string& key) {
    return with_ledger([&](Ledger& l) { return l.release(ReleaseRequest{key, h.id, std::nullopt}); });
  }
};

TEST_F(Holds, HoldReducesAvailableNotBalance) {
  Account a = open("a");
  fund(a, 1000);
  Hold h = hold(a.id, 300, "h1");
  EXPECT_EQ(h.status, HoldStatus::active);
  Account after = account(a.id);
  EXPECT_EQ(after.balance_minor, 1000);
  EXPECT_EQ(after.held_minor, 300);
  EXPECT_EQ(after.available_minor(), 700);
  Account b = open("b");
  EXPECT_THROW(transfer(a.id, b.id, 701, "t"), InsufficientFunds);
  EXPECT_THROW(hold(a.id, 701, "h2"), InsufficientFunds);
  expect_audit_clean();
}

TEST_F(Holds, PartialCaptureReleasesTheRemainder) {
  Account a = open("a"), clearing = open("clearing", "CNY", true);
  fund(a, 1000);
  Hold h = hold(a.id, 500, "wd-7");
  LedgerTransaction tx = capture(h, clearing.id, 200, "wd-7/capture");
  EXPECT_EQ(tx.hold_id, h.id);
  Account after = account(a.id);
  EXPECT_EQ(after.balance_minor, 800);
  EXPECT_EQ(after.held_minor, 0);
  Hold loaded = with_ledger([&](Ledger& l) { return l.hold_get(h.id); });
  EXPECT_EQ(loaded.status, HoldStatus::captured);
  EXPECT_EQ(loaded.captured_minor, 200);
  // Capturing again with the same key replays; with another key it is refused.
  EXPECT_TRUE(capture(h, clearing.id, 200, "wd-7/capture").replayed);
  EXPECT_THROW(capture(h, clearing.id, 200, "wd-7/capture-2"), InvalidState);
  EXPECT_THROW(release(h, "wd-7/release"), InvalidState);
  expect_audit_clean();
}

TEST_F(Holds, FullCaptureAndBounds) {
  Account a = open("a"), t = open("t");
  fund(a, 1000);
  Hold h = hold(a.id, 400, "h");
  EXPECT_THROW(capture(h, t.id, 401, "c0"), InvalidAmount);
  EXPECT_THROW(capture(h, a.id, 100, "c1"), InvalidArgument);
  capture(h, t.id, std::nullopt, "c2");
  EXPECT_EQ(account(t.id).balance_minor, 400);
  EXPECT_EQ(account(a.id).held_minor, 0);
}

TEST_F(Holds, ReleaseRestoresAvailableOnceOnly) {
  Account a = open("a"), t = open("t");
  fund(a, 1000);
  Hold h = hold(a.id, 400, "h");
  Hold released = release(h, "r1");
  EXPECT_EQ(released.status, HoldStatus::released);
  EXPECT_EQ(account(a.id).held_minor, 0);
  EXPECT_TRUE(release(h, "r1").replayed);
  EXPECT_THROW(release(h, "r2"), InvalidState);
  EXPECT_THROW(capture(h, t.id, std::nullopt, "c"), InvalidState);
  expect_audit_clean();
}

TEST_F(Holds, SameKeyReplaysDifferentRequestConflicts) {
  Account a = open("a");
  fund(a, 1000);
  Hold first = hold(a.id, 100, "h");
  Hold again = hold(a.id, 100, "h");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.id, first.id);
  EXPECT_EQ(account(a.id).held_minor, 100);
  EXPECT_THROW(hold(a.id, 101, "h"), IdempotencyConflict);
}

TEST_F(Holds, ExpiredHoldsAreSweptAndCannotBeCaptured) {
  Account a = open("a"), t = open("t");
  fund(a, 1000);
  Hold h = hold(a.id, 300, "h", 1);
  hold(a.id, 100, "keep", 3'600'000);
  // Wait on the database clock, not a sleep: the hold's expiry is in the past once now() passes it.
  db->transact([](Transaction& tx) { tx.exec_sql("SELECT pg_sleep(0.01)"); });
  EXPECT_THROW(capture(h, t.id, std::nullopt, "late"), InvalidState);
  EXPECT_EQ(with_ledger([](Ledger& l) { return l.holds_expire(100); }), 1);
  EXPECT_EQ(with_ledger([](Ledger& l) { return l.holds_expire(100); }), 0);
  EXPECT_EQ(account(a.id).held_minor, 100);
  EXPECT_EQ(with_ledger([&](Ledger& l) { return l.hold_get(h.id); }).status, HoldStatus::expired);
  expect_audit_clean();
}

TEST_F(Holds, BadInputIsRejected) {
  Account a = open("a");
  fund(a, 10);
  EXPECT_THROW(hold(a.id, 0, "z"), InvalidAmount);
  EXPECT_THROW(hold(a.id, -1, "z"), InvalidAmount);
  EXPECT_THROW(hold(424242, 1, "z"), UnknownAccount);
  EXPECT_THROW(hold(a.id, 1, "z", 0), InvalidArgument);
  EXPECT_THROW(with_ledger([](Ledger& l) { return l.release(ReleaseRequest{"r", 99999, std::nullopt}); }), InvalidArgument);
  EXPECT_EQ(count("hold"), 0);
}

}  // namespace
}  // namespace payq

namespace payq {
namespace {

// As for transfers: a replayed hold answers with the original even when the
// account could no longer cover it.
TEST_F(Holds, ReplayAnswersEvenWhenFundsAreGone) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  const Hold first = hold(a.id, 600, "h-replay");
  transfer(a.id, b.id, 400, "spend-rest");
  const Hold again = hold(a.id, 600, "h-replay");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.id, first.id);
  EXPECT_THROW(hold(a.id, 601, "h-replay"), IdempotencyConflict);
  EXPECT_EQ(account(a.id).held_minor, 600);
  expect_audit_clean();
}

}  // namespace
}  // namespace payq
