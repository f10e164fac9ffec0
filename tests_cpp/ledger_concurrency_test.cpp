// Hammers the ledger from many threads with random operations, then checks
// the invariants: audit clean, money conserved, nothing negative, and no
// error other than the expected business ones.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "ledger_test_support.hpp"
#include "payq/error.hpp"

namespace payq {
namespace {

class LedgerConcurrency : public testing::LedgerTest {};

TEST_F(LedgerConcurrency, RandomOperationsKeepEveryInvariant) {
  constexpr int thread_count = 8;
  constexpr int operation_count_per_thread = 150;
  constexpr int user_count = 12;
  constexpr std::int64_t initial_minor = 10'000;

  std::vector<Account> users;
  for (int i = 0; i < user_count; ++i) users.push_back(open("user:" + std::to_string(i)));
  Account fees = with_ledger([](Ledger& l) {
    AccountOpen r;
    r.owner = "fees";
    r.currency = "CNY";
    r.deferred_credit = true;
    return l.account_open(r);
  });
  Account clearing = open("clearing");
  for (const auto& u : users) fund(u, initial_minor);
  const std::int64_t world_id = open("world", "CNY", true).id;

  std::atomic<int> business_errors{0}, unexpected{0}, done{0};
  std::mutex log_mutex;
  std::vector<std::string> unexpected_messages;
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 random(static_cast<std::uint64_t>(t) * 7919 + 17);
      auto pick = [&](int n) { return static_cast<int>(random() % static_cast<std::uint64_t>(n)); };
      std::vector<Hold> holds;
      std::vector<std::int64_t> transfers;
      for (int i = 0; i < operation_count_per_thread; ++i) {
        const std::string key = "op-" + std::to_string(t) + "-" + std::to_string(i);
        try {
          with_ledger([&](Ledger& l) {
            switch (pick(6)) {
              case 0:
              case 1: {
                TransferRequest r;
                r.key = key;
                r.source_id = users[pick(user_count)].id;
                do r.target_id = users[pick(user_count)].id; while (r.target_id == r.source_id);
                r.amount_minor = 1 + pick(3000);
                Fee fee;
                fee.rate_bps = 60;
                fee.fixed_minor = 1;
                r.fee = fee;
                r.fee_account_id = fees.id;
                transfers.push_back(l.transfer(r).id);
                break;
              }
              case 2: {
                HoldRequest r;
                r.key = key;
                r.account_id = users[pick(user_count)].id;
                r.amount_minor = 1 + pick(2000);
                holds.push_back(l.hold(r));
                break;
              }
              case 3: {
                if (holds.empty()) break;
                Hold h = holds.back();
                holds.pop_back();
                CaptureRequest r;
                r.key = key;
                r.hold_id = h.id;
                r.target_id = clearing.id;
                r.amount_minor = 1 + pick(static_cast<int>(h.amount_minor));
                l.capture(r);
                break;
              }
              case 4: {
                if (holds.empty()) break;
                Hold h = holds.back();
                holds.pop_back();
                l.release(ReleaseRequest{key, h.id, std::nullopt});
                break;
              }
              case 5: {
                if (transfers.empty()) break;
                ReverseRequest r;
                r.key = key;
                r.transaction_id = transfers[static_cast<std::size_t>(pick(static_cast<int>(transfers.size())))];
                if (pick(2)) r.amount_minor = 1 + pick(500);
                l.reverse(r);
                break;
              }
            }
          });
          ++done;
        } catch (const InsufficientFunds&) {
          ++business_errors;
        } catch (const InvalidState&) {
          ++business_errors;  // e.g. reversing what is already fully reversed
        } catch (const InvalidAmount&) {
          ++business_errors;  // e.g. a partial reversal beyond what remains
        } catch (const std::exception& e) {
          ++unexpected;
          std::lock_guard<std::mutex> guard(log_mutex);
          unexpected_messages.push_back(e.what());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& m : unexpected_messages) ADD_FAILURE() << "unexpected error: " << m;
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(done.load(), thread_count * operation_count_per_thread / 2);

  // Fold the hot account, then check everything.
  with_ledger([&](Ledger& l) { return l.pending_fold(fees.id, 1'000'000); });
  expect_audit_clean();
  std::int64_t total = 0;
  for (const auto& u : users) {
    Account a = account(u.id);
    EXPECT_GE(a.available_minor(), 0) << "account " << a.id;
    EXPECT_GE(a.held_minor, 0);
    total += a.balance_minor;
  }
  total += account(fees.id).balance_minor + account(clearing.id).balance_minor;
  // Conservation: all money came from the world account.
  EXPECT_EQ(total, -account(world_id).balance_minor);
  EXPECT_EQ(total, user_count * initial_minor);
}

}  // namespace
}  // namespace payq
