// Keys (cpp/src/outbox_keys.cpp): an idempotency key an application chose
// for a task that settles money names one task of its kind, as a unique key
// names one task: the same request returns it, a different one is refused.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "outbox_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

// Lets two threads start their racing statements together.
class StartLine {
 public:
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (++arrived_ == 2) cv_.notify_all();
    cv_.wait(lock, [&] { return arrived_ >= 2; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
};

class Keys_ : public testing::Settlement_ {
 protected:
  // The issue's withdrawal endpoint: hold, then a payout keyed by the request.
  EnqueueResult withdrawal(const std::string& request, std::int64_t amount = 5000,
                           const std::string& payload = R"({"to":"x"})") {
    return db->transact([&](Transaction& tx) {
      HoldRequest h;
      h.key = request + "/hold";
      h.account_id = wallet.id;
      h.amount_minor = amount;
      const Hold hold = Ledger(tx).hold(h);
      TaskSpec s = spec("payout", "payouts");
      s.payload_json = payload;
      s.idempotency_key = request;
      s.settlement.hold_id = hold.id;
      s.settlement.capture_account_id = clearing.id;
      return Outbox(tx).enqueue(s);
    });
  }
  // A settling task without a hold (no lock is shared by two of them).
  TaskSpec refund_notice(const std::string& key, std::int64_t transaction_id) {
    TaskSpec s = spec("refund.notice", "notices");
    s.idempotency_key = key;
    s.settlement.reverse_transaction_id = transaction_id;
    return s;
  }
};

TEST_F(Keys_, SecondWithdrawalOfOneRequestReturnsTheFirstTask) {
  const EnqueueResult first = withdrawal("wd-8");
  const EnqueueResult second = withdrawal("wd-8");
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(second.created);
  EXPECT_EQ(second.task_id, first.task_id);
  EXPECT_EQ(count_tasks("payout"), 1);
  EXPECT_EQ(get(first.task_id).idempotency_key, "wd-8");
  expect_audit_clean();
}

TEST_F(Keys_, DifferentRequestUnderTheKeyIsAConflictAndWritesNothing) {
  const EnqueueResult first = withdrawal("wd-20");
  const std::int64_t holds_before = count("hold");
  try {
    db->transact([&](Transaction& tx) {
      TaskSpec s = spec("payout", "payouts");
      s.payload_json = R"({"to":"someone else"})";
      s.idempotency_key = "wd-20";
      s.settlement.hold_id = Ledger(tx).hold_get(get(first.task_id).settlement.hold_id.value()).id;
      s.settlement.capture_account_id = clearing.id;
      return Outbox(tx).enqueue(s);
    });
    ADD_FAILURE() << "a different request under a taken idempotency key was accepted";
  } catch (const IdempotencyConflict& e) {
    EXPECT_NE(std::string(e.what()).find("task " + std::to_string(first.task_id)), std::string::npos) << e.what();
  }
  // A new hold for a different amount under the same request key: refused,
  // and the transaction that made the hold rolls back with it.
  EXPECT_THROW(db->transact([&](Transaction& tx) {
                 HoldRequest h;
                 h.key = "wd-20/second-hold";
                 h.account_id = wallet.id;
                 h.amount_minor = 3000;
                 TaskSpec s = spec("payout", "payouts");
                 s.idempotency_key = "wd-20";
                 s.settlement.hold_id = Ledger(tx).hold(h).id;
                 s.settlement.capture_account_id = clearing.id;
                 return Outbox(tx).enqueue(s);
               }),
               IdempotencyConflict);
  EXPECT_EQ(count("hold"), holds_before);
  EXPECT_EQ(count_tasks("payout"), 1);
}

TEST_F(Keys_, KeysAreScopedByKindAndOnlyBindSettlingTasks) {
  const Account shop = open("shop");
  const LedgerTransaction paid = transfer(wallet.id, shop.id, 100, "order-21");
  const EnqueueResult payout = withdrawal("req-21");
  // Another kind may use the same key.
  const EnqueueResult notice = enqueue(refund_notice("req-21", paid.id));
  EXPECT_TRUE(notice.created);
  EXPECT_NE(notice.task_id, payout.task_id);
  // Tasks without a settlement behave as before: a key may repeat.
  TaskSpec plain = spec("sms.send");
  plain.idempotency_key = "req-21";
  EXPECT_TRUE(enqueue(plain).created);
  EXPECT_TRUE(enqueue(plain).created);
  // The default key is the task's own.
  TaskSpec defaulted = refund_notice("x", paid.id);
  defaulted.idempotency_key.reset();
  defaulted.settlement.reverse_transaction_id.reset();
  defaulted.settlement.followup_json = R"({"kind":"refund.failed"})";
  EXPECT_NE(enqueue(defaulted).task_id, enqueue(defaulted).task_id);
}

TEST_F(Keys_, DuplicatesWithinOneBatchAreFoldedOrRefused) {
  const Account shop = open("shop");
  const LedgerTransaction paid = transfer(wallet.id, shop.id, 100, "order-22");
  const TaskSpec a = refund_notice("req-22", paid.id);
  const auto results = db->transact([&](Transaction& tx) { return Outbox(tx).enqueue_batch({a, a}); });
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].created);
  EXPECT_FALSE(results[1].created);
  EXPECT_EQ(results[1].task_id, results[0].task_id);
  TaskSpec b = refund_notice("req-23", paid.id);
  TaskSpec b_other = b;
  b_other.payload_json = R"({"changed":true})";
  const std::int64_t before = count("task");
  EXPECT_THROW(db->transact([&](Transaction& tx) { return Outbox(tx).enqueue_batch({b, b_other}); }),
               IdempotencyConflict);
  EXPECT_EQ(count("task"), before);
}

TEST_F(Keys_, KeyOutlivesThePruningOfItsTask) {
  const EnqueueResult first = withdrawal("wd-24", 1000);
  complete(claim("payouts").at(0), OutcomeKind::success);
  EXPECT_EQ(db->transact([](Transaction& tx) { return Outbox(tx).prune(0, 100); }), 1);
  const EnqueueResult later = withdrawal("wd-24", 1000);
  EXPECT_FALSE(later.created);
  EXPECT_EQ(later.task_id, first.task_id);
  EXPECT_EQ(count_tasks("payout"), 0);
  expect_audit_clean();
}

// Two transactions race with one request (no lock shared between them):
// exactly one task; the other transaction gets it back, never a unique
// violation that aborts it.
TEST_F(Keys_, ConcurrentEnqueuesOfOneRequestMakeOneTask) {
  const Account shop = open("shop");
  const LedgerTransaction paid = transfer(wallet.id, shop.id, 100, "order-25");
  constexpr int round_count = 20;
  for (int round = 0; round < round_count; ++round) {
    const TaskSpec s = refund_notice("race-" + std::to_string(round), paid.id);
    StartLine start;
    std::atomic<std::int64_t> ids[2] = {0, 0};
    std::atomic<int> errors{0};
    auto racer = [&](int n) {
      try {
        db->transact([&](Transaction& tx) {
          start.arrive_and_wait();
          ids[n] = Outbox(tx).enqueue(s).task_id;
          // A statement after the enqueue: the transaction is still usable.
          tx.exec_sql("SELECT 1");
        });
      } catch (const std::exception& e) {
        ++errors;
        ADD_FAILURE() << e.what();
      }
    };
    std::thread a(racer, 0), b(racer, 1);
    a.join();
    b.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(ids[0].load(), ids[1].load()) << "round " << round;
  }
  EXPECT_EQ(count_tasks("refund.notice"), round_count);
}

}  // namespace
}  // namespace payq
