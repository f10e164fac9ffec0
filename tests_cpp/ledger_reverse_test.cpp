#include <gtest/gtest.h>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class Reversals : public testing::LedgerTest {
 protected:
  LedgerTransaction reverse(std::int64_t tx, std::optional<std::int64_t> amount, const std::string& key) {
    return with_ledger([&](Ledger& l) {
      ReverseRequest r;
      r.key = key;
      r.transaction_id = tx;
      r.amount_minor = amount;
      return l.reverse(r);
    });
  }
  LedgerTransaction transfer_with_fee(const Account& a, const Account& b, const Account& fees, std::int64_t amount,
                                      const std::string& key) {
    return with_ledger([&](Ledger& l) {
      TransferRequest r;
      r.key = key;
      r.source_id = a.id;
      r.target_id = b.id;
      r.amount_minor = amount;
      Fee fee;
      fee.fixed_minor = 10;
      r.fee = fee;
      r.fee_account_id = fees.id;
      return l.transfer(r);
    });
  }
};

TEST_F(Reversals, FullReversalRestoresEveryAccount) {
  Account a = open("a"), b = open("b"), fees = open("fees");
  fund(a, 1000);
  auto tx = transfer_with_fee(a, b, fees, 500, "pay");
  auto back = reverse(tx.id, std::nullopt, "refund");
  EXPECT_EQ(back.reverses_id, tx.id);
  EXPECT_EQ(back.reversed_minor, 510);
  EXPECT_EQ(account(a.id).balance_minor, 1000);
  EXPECT_EQ(account(b.id).balance_minor, 0);
  EXPECT_EQ(account(fees.id).balance_minor, 0);
  EXPECT_THROW(reverse(tx.id, std::nullopt, "refund-2"), InvalidState);
  EXPECT_THROW(reverse(back.id, std::nullopt, "undo-refund"), InvalidState);
  expect_audit_clean();
}

TEST_F(Reversals, PartialReversalsNeverExceedTheOriginal) {
  Account a = open("a"), b = open("b"), fees = open("fees");
  fund(a, 1000);
  auto tx = transfer_with_fee(a, b, fees, 500, "pay");  // a -510, b +500, fees +10
  auto part = reverse(tx.id, 200, "refund-1");
  // Split in proportion to what remains: 200 * 500/510 = 196.08 -> 196, 200 * 10/510 = 3.92 -> 4.
  std::int64_t from_b = 0, from_fees = 0;
  for (const auto& e : part.entries) {
    if (e.account_id == b.id) from_b = e.amount_minor;
    if (e.account_id == fees.id) from_fees = e.amount_minor;
  }
  EXPECT_EQ(from_b, -196);
  EXPECT_EQ(from_fees, -4);
  EXPECT_EQ(account(a.id).balance_minor, 490 + 200);
  EXPECT_THROW(reverse(tx.id, 311, "refund-2"), InvalidAmount);
  reverse(tx.id, 300, "refund-2");
  auto rest = reverse(tx.id, std::nullopt, "refund-3");
  EXPECT_EQ(rest.reversed_minor, 10);
  EXPECT_EQ(account(a.id).balance_minor, 1000);
  EXPECT_EQ(account(b.id).balance_minor, 0);
  EXPECT_EQ(account(fees.id).balance_minor, 0);
  EXPECT_TRUE(reverse(tx.id, 200, "refund-1").replayed);
  expect_audit_clean();
}

TEST_F(Reversals, ReversalNeedsTheFundsBack) {
  Account a = open("a"), b = open("b"), c = open("c");
  fund(a, 100);
  auto tx = transfer(a.id, b.id, 100, "pay");
  transfer(b.id, c.id, 100, "spent");
  EXPECT_THROW(reverse(tx.id, std::nullopt, "refund"), InsufficientFunds);
  EXPECT_THROW(reverse(999999, std::nullopt, "refund"), InvalidArgument);
  EXPECT_THROW(reverse(tx.id, 0, "refund"), InvalidAmount);
}

}  // namespace
}  // namespace payq
