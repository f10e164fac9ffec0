#include "payq/ledger.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <set>
#include <thread>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

using testing::LedgerTest;
class Ledger_ : public LedgerTest {};

TEST_F(Ledger_, AccountOpenTwiceReturnsTheSameAccount) {
  Account a = open("user:1");
  Account b = open("user:1");
  EXPECT_EQ(a.id, b.id);
  EXPECT_NE(open("user:1", "USD").id, a.id);
  EXPECT_EQ(a.balance_minor, 0);
}

TEST_F(Ledger_, AccountOpenRejectsUnknownCurrencyAndBadOwner) {
  EXPECT_THROW(open("user:1", "XXQ"), UnknownCurrency);
  EXPECT_THROW(open(""), InvalidArgument);
  EXPECT_THROW(open(std::string(201, 'x')), InvalidArgument);
  EXPECT_EQ(count("account"), 0);
}

TEST_F(Ledger_, CustomCurrencyIsDefinedOnceWithOneExponent) {
  with_ledger([](Ledger& l) { l.currency_define("PTS", 0); });
  EXPECT_EQ(open("user:1", "PTS").currency, "PTS");
  EXPECT_THROW(with_ledger([](Ledger& l) { l.currency_define("PTS", 2); }), InvalidArgument);
}

TEST_F(Ledger_, TransferMovesMoneyAndJournalsBalanceAfter) {
  Account a = open("a"), b = open("b");
  fund(a, 10000);
  LedgerTransaction tx = transfer(a.id, b.id, 1234, "t1");
  ASSERT_EQ(tx.entries.size(), 2u);
  EXPECT_EQ(tx.entries[0].account_id, a.id);
  EXPECT_EQ(tx.entries[0].amount_minor, -1234);
  EXPECT_EQ(tx.entries[0].balance_after, 10000 - 1234);
  EXPECT_EQ(tx.entries[0].seq, 2);
  EXPECT_EQ(tx.entries[1].balance_after, 1234);
  EXPECT_EQ(tx.entries[1].seq, 1);
  EXPECT_EQ(account(a.id).balance_minor, 8766);
  EXPECT_EQ(account(b.id).balance_minor, 1234);
  auto loaded = with_ledger([&](Ledger& l) { return l.transaction_get(tx.id); });
  EXPECT_EQ(loaded.entries.size(), 2u);
  EXPECT_EQ(loaded.key, "t1");
  expect_audit_clean();
}

TEST_F(Ledger_, TransferWithFeeRoundsHalfUpByDefault) {
  Account a = open("a"), b = open("b"), fees = open("fees");
  fund(a, 100000);
  auto tx = with_ledger([&](Ledger& l) {
    TransferRequest r;
    r.key = "fee-1";
    r.source_id = a.id;
    r.target_id = b.id;
    r.amount_minor = 1234;  // 60 bps: 7.404 -> 7
    r.fee = Fee{60, 0, std::nullopt, std::nullopt, Rounding::half_up};
    r.fee_account_id = fees.id;
    return l.transfer(r);
  });
  ASSERT_EQ(tx.entries.size(), 3u);
  EXPECT_EQ(tx.entries[0].amount_minor, -1241);
  EXPECT_EQ(tx.entries[1].amount_minor, 1234);
  EXPECT_EQ(tx.entries[2].amount_minor, 7);
  auto tie = with_ledger([&](Ledger& l) {
    TransferRequest r;
    r.key = "fee-2";
    r.source_id = a.id;
    r.target_id = b.id;
    r.amount_minor = 250;  // 200 bps: 5.0 exactly; 100 bps of 250: 2.5 -> 3 half_up, 2 half_even
    r.fee = Fee{100, 0, std::nullopt, std::nullopt, Rounding::half_even};
    r.fee_account_id = fees.id;
    return l.transfer(r);
  });
  EXPECT_EQ(tie.entries[2].amount_minor, 2);
  EXPECT_EQ(account(fees.id).balance_minor, 9);
  expect_audit_clean();
}

TEST_F(Ledger_, FeePaidByTargetComesOutOfWhatItReceives) {
  Account a = open("a"), b = open("b"), fees = open("fees");
  fund(a, 1000);
  auto tx = with_ledger([&](Ledger& l) {
    TransferRequest r;
    r.key = "ft";
    r.source_id = a.id;
    r.target_id = b.id;
    r.amount_minor = 1000;
    r.fee = Fee{0, 30, std::nullopt, std::nullopt, Rounding::half_up};
    r.fee_account_id = fees.id;
    r.fee_payer = FeePayer::target;
    return l.transfer(r);
  });
  EXPECT_EQ(account(a.id).balance_minor, 0);
  EXPECT_EQ(account(b.id).balance_minor, 970);
  EXPECT_EQ(account(fees.id).balance_minor, 30);
}

TEST_F(Ledger_, InsufficientFundsWritesNothingAndIsNotRemembered) {
  Account a = open("a"), b = open("b");
  fund(a, 100);
  const auto transactions = count("ledger_transaction");
  EXPECT_THROW(transfer(a.id, b.id, 101, "wd-1"), InsufficientFunds);
  EXPECT_EQ(count("ledger_transaction"), transactions);
  EXPECT_EQ(count("operation"), transactions);
  EXPECT_EQ(account(a.id).balance_minor, 100);
  fund(a, 1);
  // The same key now succeeds: a refused request was not recorded as done.
  EXPECT_EQ(transfer(a.id, b.id, 101, "wd-1").entries[1].amount_minor, 101);
}

TEST_F(Ledger_, SameKeySameRequestReplaysWithoutChange) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  auto first = transfer(a.id, b.id, 300, "k");
  auto again = transfer(a.id, b.id, 300, "k");
  EXPECT_FALSE(first.replayed);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.id, first.id);
  EXPECT_EQ(account(a.id).balance_minor, 700);
  EXPECT_THROW(transfer(a.id, b.id, 301, "k"), IdempotencyConflict);
  EXPECT_THROW(transfer(b.id, a.id, 300, "k"), IdempotencyConflict);
}

TEST_F(Ledger_, BadInputIsRejectedBeforeAnythingIsWritten) {
  Account a = open("a"), b = open("b"), usd = open("u", "USD");
  fund(a, 1000);
  const auto before = count("operation");
  EXPECT_THROW(transfer(a.id, b.id, 0, "x1"), InvalidAmount);
  EXPECT_THROW(transfer(a.id, b.id, -5, "x2"), InvalidAmount);
  EXPECT_THROW(transfer(a.id, a.id, 5, "x3"), InvalidArgument);
  EXPECT_THROW(transfer(a.id, 999999, 5, "x4"), UnknownAccount);
  EXPECT_THROW(transfer(a.id, usd.id, 5, "x5"), CurrencyMismatch);
  EXPECT_THROW(transfer(a.id, b.id, 5, ""), InvalidArgument);
  EXPECT_THROW(transfer(a.id, b.id, 5, std::string(300, 'k')), InvalidArgument);
  EXPECT_THROW(transfer(a.id, b.id, 5, std::string("bad\nkey")), InvalidArgument);
  EXPECT_THROW(transfer(a.id, b.id, INT64_MAX, "x6"), InsufficientFunds);
  EXPECT_THROW(with_ledger([&](Ledger& l) {
                 TransferRequest r;
                 r.key = "x7";
                 r.source_id = a.id;
                 r.target_id = b.id;
                 r.amount_minor = 5;
                 r.metadata_json = "[1,2]";
                 return l.transfer(r);
               }),
               InvalidArgument);
  EXPECT_THROW(with_ledger([&](Ledger& l) {
                 TransferRequest r;
                 r.key = "x8";
                 r.source_id = a.id;
                 r.target_id = b.id;
                 r.amount_minor = 5;
                 Fee fee;
                 fee.rate_bps = 10;
                 r.fee = fee;
                 return l.transfer(r);
               }),
               InvalidArgument);
  EXPECT_EQ(count("operation"), before);
  expect_audit_clean();
}

TEST_F(Ledger_, OverflowIsInvalidAmount) {
  Account world = open("world", "CNY", true), a = open("a");
  transfer(world.id, a.id, INT64_MAX - 10, "big");
  // The world account itself cannot go further below -(INT64_MAX - 10) - 100.
  Account b = open("b");
  EXPECT_THROW(transfer(world.id, b.id, 100, "small"), InvalidAmount);
  Account world2 = open("world2", "CNY", true);
  transfer(world2.id, b.id, 100, "small");
  // a's balance cannot take 100 more.
  EXPECT_THROW(transfer(b.id, a.id, 100, "over"), InvalidAmount);
}

TEST_F(Ledger_, PostRequiresBalancedLegsPerCurrency) {
  Account a = open("a"), b = open("b"), c = open("c");
  fund(a, 1000);
  auto post = [&](std::vector<Leg> legs, const std::string& key) {
    return with_ledger([&](Ledger& l) {
      PostRequest r;
      r.key = key;
      r.legs = legs;
      return l.post(r);
    });
  };
  EXPECT_THROW(post({{a.id, -10}, {b.id, 9}}, "p1"), Unbalanced);
  EXPECT_THROW(post({{a.id, -10}}, "p2"), Unbalanced);
  EXPECT_THROW(post({{a.id, -10}, {b.id, 0}, {c.id, 10}}, "p3"), InvalidAmount);
  auto tx = post({{a.id, -10}, {b.id, 4}, {c.id, 6}}, "p4");
  EXPECT_EQ(tx.entries.size(), 3u);
  Account world_usd = open("world", "USD", true), u = open("u", "USD"), world = open("world");
  // An FX posting: two currencies, each balanced.
  auto fx = post({{a.id, -100}, {world.id, 100}, {world_usd.id, -14}, {u.id, 14}}, "p5");
  EXPECT_EQ(fx.entries.size(), 4u);
  expect_audit_clean();
}

TEST_F(Ledger_, PostRefusesTwoLegsOnOneAccount) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  const auto before = count("operation");
  auto post = [&](std::vector<Leg> legs, const std::string& key) {
    return with_ledger([&](Ledger& l) {
      PostRequest r;
      r.key = key;
      r.legs = legs;
      return l.post(r);
    });
  };
  EXPECT_THROW(post({{a.id, -1}, {a.id, 1}}, "same-1"), InvalidArgument);
  EXPECT_THROW(post({{a.id, -5}, {a.id, 3}, {b.id, 2}}, "same-2"), InvalidArgument);
  EXPECT_EQ(count("operation"), before);
  EXPECT_EQ(post({{a.id, -2}, {b.id, 2}}, "net").entries.size(), 2u);
}

TEST_F(Ledger_, PostingKindIsBoundedAndCheckedLikeOtherText) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  const auto before = count("operation");
  auto transfer_kind = [&](const std::string& kind, const std::string& key) {
    return with_ledger([&](Ledger& l) {
      TransferRequest r;
      r.key = key;
      r.source_id = a.id;
      r.target_id = b.id;
      r.amount_minor = 1;
      r.kind = kind;
      return l.transfer(r);
    });
  };
  EXPECT_THROW(transfer_kind(std::string(10 * 1024, 'k'), "k1"), InvalidArgument);
  EXPECT_THROW(transfer_kind(std::string("t\0", 2), "k2"), InvalidArgument);
  EXPECT_THROW(transfer_kind("a\tb", "k3"), InvalidArgument);
  EXPECT_EQ(count("operation"), before);
  EXPECT_EQ(transfer_kind(std::string(posting_kind_bytes_max, 'k'), "k4").kind.size(), posting_kind_bytes_max);
  EXPECT_EQ(transfer_kind("", "k5").kind, "transfer");  // empty: the operation's default
}

TEST_F(Ledger_, MetadataWithNulIsRefusedBeforeTheDatabase) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  const auto before = count("operation");
  EXPECT_THROW(with_ledger([&](Ledger& l) {
                 TransferRequest r;
                 r.key = "nul";
                 r.source_id = a.id;
                 r.target_id = b.id;
                 r.amount_minor = 1;
                 r.metadata_json = R"({"note":"a\u0000b"})";
                 return l.transfer(r);
               }),
               InvalidArgument);
  EXPECT_EQ(count("operation"), before);
}

TEST_F(Ledger_, DatabaseConstraintForbidsNegativeAvailable) {
  Account a = open("a");
  EXPECT_THROW(db->transact([&](Transaction& tx) {
                 tx.exec_sql("UPDATE @schema@.account SET balance = -1 WHERE id = $1", {std::to_string(a.id)});
               }),
               DatabaseError);
}

TEST_F(Ledger_, JournalIsAppendOnly) {
  Account a = open("a"), b = open("b");
  fund(a, 10);
  transfer(a.id, b.id, 5, "t");
  EXPECT_THROW(db->transact([](Transaction& tx) { tx.exec_sql("UPDATE @schema@.entry SET amount = 1"); }),
               DatabaseError);
  EXPECT_THROW(db->transact([](Transaction& tx) { tx.exec_sql("DELETE FROM @schema@.entry"); }), DatabaseError);
  EXPECT_THROW(db->transact([](Transaction& tx) { tx.exec_sql("DELETE FROM @schema@.ledger_transaction"); }),
               DatabaseError);
}

TEST_F(Ledger_, OverdraftFloorAndSystemAccounts) {
  Account a = with_ledger([](Ledger& l) {
    AccountOpen r;
    r.owner = "credit-line";
    r.currency = "CNY";
    r.overdraft_minor = 500;
    return l.account_open(r);
  });
  Account b = open("b");
  transfer(a.id, b.id, 500, "o1");
  EXPECT_EQ(account(a.id).balance_minor, -500);
  EXPECT_THROW(transfer(a.id, b.id, 1, "o2"), InsufficientFunds);
  Account world = open("world", "CNY", true);
  transfer(world.id, b.id, 1'000'000, "o3");
  EXPECT_EQ(account(world.id).balance_minor, -1'000'000);
  expect_audit_clean();
}

TEST_F(Ledger_, ClosedAccountTakesNoPostings) {
  Account a = open("a"), b = open("b");
  with_ledger([&](Ledger& l) { return l.account_close(b.id); });
  fund(a, 10);
  EXPECT_THROW(transfer(a.id, b.id, 5, "c1"), AccountClosed);
  EXPECT_THROW(with_ledger([&](Ledger& l) { return l.account_close(a.id); }), InvalidState);
}

TEST_F(Ledger_, SavepointLetsTheOuterTransactionGoOn) {
  Account a = open("a"), b = open("b");
  fund(a, 100);
  db->transact([&](Transaction& tx) {
    Ledger ledger(tx);
    TransferRequest r;
    r.key = "inner";
    r.source_id = a.id;
    r.target_id = b.id;
    r.amount_minor = 1000;
    {
      Savepoint inner(tx);
      EXPECT_THROW(ledger.transfer(r), InsufficientFunds);
    }
    r.key = "outer";
    r.amount_minor = 60;
    ledger.transfer(r);
  });
  EXPECT_EQ(account(b.id).balance_minor, 60);
  EXPECT_FALSE(with_ledger([](Ledger& l) { return l.transaction_find("inner").has_value(); }));
}

TEST_F(Ledger_, HistoryPagesBySequence) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  for (int i = 0; i < 5; ++i) transfer(a.id, b.id, 10 + i, "h" + std::to_string(i));
  auto page1 = with_ledger([&](Ledger& l) { return l.history(a.id, 0, 4); });
  ASSERT_EQ(page1.size(), 4u);
  EXPECT_EQ(*page1[0].seq, 1);
  auto page2 = with_ledger([&](Ledger& l) { return l.history(a.id, *page1.back().seq, 4); });
  ASSERT_EQ(page2.size(), 2u);
  EXPECT_EQ(*page2.back().balance_after, 1000 - (10 + 11 + 12 + 13 + 14));
  EXPECT_THROW(with_ledger([&](Ledger& l) { return l.history(a.id, 0, 0); }), InvalidArgument);
}

// A ledger with one transfer and a clean audit, then `corrupt` run behind
// payq's back on accounts a (funded with 100, paid 40) and b: the audit after.
class LedgerAudit : public LedgerTest {
 protected:
  AuditReport audit_after(const std::function<void(Transaction&, const Account& a, const Account& b)>& corrupt) {
    Account a = open("a"), b = open("b");
    fund(a, 100);
    transfer(a.id, b.id, 40, "t");
    expect_audit_clean();
    db->transact([&](Transaction& tx) { corrupt(tx, a, b); });
    return with_ledger([](Ledger& l) { return l.audit(); });
  }
};

TEST_F(LedgerAudit, AuditReportsEveryViolation) {
  // An unbalanced entry and a wrong balance.
  AuditReport report = audit_after([](Transaction& tx, const Account&, const Account& b) {
    tx.exec_sql("ALTER TABLE @schema@.account DISABLE TRIGGER ALL");
    tx.exec_sql("UPDATE @schema@.account SET balance = balance + 1, held = 5 WHERE id = $1", {std::to_string(b.id)});
  });
  std::set<std::string> checks;
  for (const auto& v : report.violations) checks.insert(v.check);
  EXPECT_TRUE(checks.count("account_matches_journal"));
  EXPECT_TRUE(checks.count("held_matches_active_holds"));
  EXPECT_GE(report.accounts_checked, 3);
}

// Entries carry no foreign key to their account or transaction (a posting
// writes them under its own locks); the audit is what checks the links.
TEST_F(LedgerAudit, AuditReportsEntriesWithoutTheirAccountOrTransaction) {
  AuditReport report = audit_after([](Transaction& tx, const Account& a, const Account&) {
    tx.exec_sql("INSERT INTO @schema@.entry (account_id, seq, transaction_id, leg, amount, balance_after) "
                "VALUES (987654, 1, 1, 0, 5, 5), ($1, 99, 123456789, 0, 5, 5)",
                {std::to_string(a.id)});
  });
  std::set<std::string> problems;
  for (const auto& v : report.violations) {
    if (v.check == "records_linked") problems.insert(v.detail);
  }
  EXPECT_TRUE(problems.count("refers to missing account 987654")) << report.violations.size();
  EXPECT_TRUE(problems.count("refers to missing transaction 123456789"));
}


TEST_F(Ledger_, AccountsListPagesByIdAndFiltersByOwner) {
  Account a = open("a"), b = open("b"), a_usd = open("a", "USD");
  auto all = with_ledger([](Ledger& l) { return l.accounts_list(0, 2); });
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, a.id);
  auto rest = with_ledger([&](Ledger& l) { return l.accounts_list(all.back().id, 10); });
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].id, a_usd.id);
  auto of_a = with_ledger([](Ledger& l) { return l.accounts_list(0, 10, std::string("a")); });
  EXPECT_EQ(of_a.size(), 2u);
  (void)b;
  EXPECT_THROW(with_ledger([](Ledger& l) { return l.accounts_list(0, 0); }), InvalidArgument);
}


// The key is not read before the checks (posting_lock): a posting that the
// current state would refuse must still answer a replay with the original
// result, and a different request under a used key with a conflict.
TEST_F(Ledger_, ReplayAnswersEvenWhenTheStateWouldNowRefuse) {
  Account a = open("a"), b = open("b"), c = open("c");
  fund(a, 1000);
  const auto first = transfer(a.id, b.id, 300, "pay-1");
  transfer(a.id, c.id, 700, "drain");  // a now has nothing left
  const auto again = transfer(a.id, b.id, 300, "pay-1");
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.id, first.id);
  EXPECT_THROW(transfer(a.id, b.id, 301, "pay-1"), IdempotencyConflict);  // not InsufficientFunds
  transfer(b.id, c.id, 300, "move-on");
  with_ledger([&](Ledger& l) { return l.account_close(b.id); });
  EXPECT_TRUE(transfer(a.id, b.id, 300, "pay-1").replayed);  // not AccountClosed
  EXPECT_EQ(account(a.id).balance_minor, 0);
  EXPECT_EQ(account(c.id).balance_minor, 1000);
  expect_audit_clean();
}

// Many threads sending one request under one key: it is applied once, and
// every other call gets that result back.
TEST_F(Ledger_, ConcurrentSameKeyTransfersApplyOnce) {
  Account a = open("a"), b = open("b");
  fund(a, 1000);
  constexpr int thread_count = 8;
  std::atomic<int> applied{0}, replayed{0}, failed{0};
  std::atomic<std::int64_t> transaction_id{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&] {
      try {
        const auto result = transfer(a.id, b.id, 250, "same-key");
        (result.replayed ? replayed : applied) += 1;
        std::int64_t expected = 0;
        if (!transaction_id.compare_exchange_strong(expected, result.id) && expected != result.id) failed += 1;
      } catch (const std::exception&) {
        failed += 1;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(applied.load(), 1);
  EXPECT_EQ(replayed.load(), thread_count - 1);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(account(a.id).balance_minor, 750);
  EXPECT_EQ(account(b.id).balance_minor, 250);
  expect_audit_clean();
}

}  // namespace
}  // namespace payq
