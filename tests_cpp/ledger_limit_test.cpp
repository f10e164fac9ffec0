#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class Limits : public testing::LedgerTest {
 protected:
  void limit(std::optional<std::int64_t> account, LimitKind kind, std::int64_t value) {
    with_ledger([&](Ledger& l) {
      LimitRule rule;
      rule.account_id = account;
      if (!account) {
        rule.ns = "default";
        rule.currency = "CNY";
      }
      rule.kind = kind;
      rule.value = value;
      l.limit_set(rule);
    });
  }
};

TEST_F(Limits, PerTransactionMaximum) {
  Account a = open("a"), b = open("b");
  fund(a, 10000);
  limit(a.id, LimitKind::per_transaction_max, 500);
  EXPECT_THROW(transfer(a.id, b.id, 501, "t1"), LimitExceeded);
  transfer(a.id, b.id, 500, "t2");
  EXPECT_EQ(account(b.id).balance_minor, 500);
}

TEST_F(Limits, DailyCountAndAmountAcrossTransfersAndHolds) {
  Account a = open("a"), b = open("b");
  fund(a, 10000);
  limit(a.id, LimitKind::daily_count, 3);
  limit(a.id, LimitKind::daily_amount, 1000);
  transfer(a.id, b.id, 400, "t1");
  with_ledger([&](Ledger& l) {
    HoldRequest r;
    r.key = "h1";
    r.account_id = a.id;
    r.amount_minor = 500;
    return l.hold(r);
  });
  EXPECT_THROW(transfer(a.id, b.id, 101, "t2"), LimitExceeded);  // 1001 > 1000
  transfer(a.id, b.id, 100, "t3");                               // third of the day
  EXPECT_THROW(transfer(a.id, b.id, 1, "t4"), LimitExceeded);    // fourth
  // The replay of an old key is not a new transfer and is not limited.
  EXPECT_TRUE(transfer(a.id, b.id, 400, "t1").replayed);
  // Incoming money is never limited.
  transfer(b.id, a.id, 50, "back");
}

TEST_F(Limits, NamespaceRuleAppliesToEachAccount) {
  Account a = open("a"), b = open("b"), c = open("c");
  fund(a, 1000);
  fund(b, 1000);
  limit(std::nullopt, LimitKind::per_transaction_max, 100);
  EXPECT_THROW(transfer(a.id, c.id, 101, "t1"), LimitExceeded);
  EXPECT_THROW(transfer(b.id, c.id, 101, "t2"), LimitExceeded);
  transfer(a.id, c.id, 100, "t3");
  with_ledger([&](Ledger& l) {
    LimitRule rule;
    rule.ns = "default";
    rule.currency = "CNY";
    rule.kind = LimitKind::per_transaction_max;
    l.limit_remove(rule);
  });
  transfer(a.id, c.id, 500, "t4");
}

TEST_F(Limits, ConcurrentTransfersCannotBothSqueezeUnder) {
  Account a = open("a"), b = open("b");
  fund(a, 100000);
  limit(a.id, LimitKind::daily_count, 5);
  constexpr int thread_count = 8;
  std::atomic<int> succeeded{0}, limited{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        try {
          transfer(a.id, b.id, 10, "c-" + std::to_string(t) + "-" + std::to_string(i));
          ++succeeded;
        } catch (const LimitExceeded&) {
          ++limited;
        } catch (...) {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(succeeded.load(), 5);
  EXPECT_EQ(limited.load(), thread_count * 3 - 5);
  EXPECT_EQ(other.load(), 0);
}

TEST_F(Limits, BadRulesAreRejected) {
  Account a = open("a");
  EXPECT_THROW(limit(a.id, LimitKind::daily_amount, -1), InvalidArgument);
  EXPECT_THROW(limit(987654, LimitKind::daily_amount, 1), UnknownAccount);
  EXPECT_THROW(limit_kind_parse("weekly"), InvalidArgument);
}

}  // namespace
}  // namespace payq
