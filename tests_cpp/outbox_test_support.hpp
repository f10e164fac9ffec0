// Shared by the outbox tests: a fixture that enqueues, claims and completes
// in transactions of its own, and one with a wallet whose withdrawals hold
// money for a payout task to settle.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ledger_test_support.hpp"
#include "payq/ledger.hpp"
#include "payq/outbox.hpp"

namespace payq::testing {

class Outbox_ : public LedgerTest {
 protected:
  EnqueueResult enqueue(TaskSpec spec) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).enqueue(spec); });
  }
  TaskSpec spec(const std::string& kind = "sms.send", const std::string& queue = "default") {
    TaskSpec s;
    s.kind = kind;
    s.queue = queue;
    s.payload_json = R"({"to":"+86 138","text":"hi"})";
    return s;
  }
  std::vector<Task> claim(const std::string& queue = "default", std::size_t n = 10, const std::string& worker = "w1") {
    return db->transact([&](Transaction& tx) { return Outbox(tx).claim({queue, worker, n}); });
  }
  Completion complete(const Task& task, OutcomeKind kind, const std::string& error = "",
                      std::optional<std::int64_t> retry_after_ms = 0) {
    return db->transact([&](Transaction& tx) {
      CompleteRequest r;
      r.task_id = task.id;
      r.lease_token = *task.lease_token;
      r.attempt = task.attempt;
      r.outcome.kind = kind;
      r.outcome.error = error;
      r.outcome.result_json = R"({"provider_id":"p-1"})";
      r.outcome.retry_after_ms = retry_after_ms;
      r.worker_id = "w1";
      r.duration_ms = 5;
      return Outbox(tx).complete(r);
    });
  }
  Task get(std::int64_t id) {
    return db->transact([&](Transaction& tx) { return Outbox(tx).task_get(id); });
  }
  std::int64_t count_tasks(const std::string& kind) {
    return db->transact([&](Transaction& tx) {
      return tx.exec_sql("SELECT count(*) AS n FROM @schema@.task WHERE kind = $1", {kind}).i64(0, "n");
    });
  }
};

class Settlement_ : public Outbox_ {
 protected:
  void SetUp() override {
    Outbox_::SetUp();
    wallet = open("user:1");
    clearing = open("clearing", "CNY", true);
    fund(wallet, 10000);
  }
  std::pair<Hold, EnqueueResult> withdraw(std::int64_t amount, const std::string& key, int attempt_max = 3,
                                          std::optional<std::int64_t> expires_in_ms = std::nullopt) {
    return db->transact([&](Transaction& tx) {
      HoldRequest h;
      h.key = key;
      h.account_id = wallet.id;
      h.amount_minor = amount;
      h.expires_in_ms = expires_in_ms;
      Hold hold = Ledger(tx).hold(h);
      TaskSpec s = spec("payout", "provider-a");
      s.attempt_max = attempt_max;
      s.amount_minor = amount;
      s.currency = "CNY";
      s.settlement.hold_id = hold.id;
      s.settlement.capture_account_id = clearing.id;
      s.unique_key = key;
      return std::make_pair(hold, Outbox(tx).enqueue(s));
    });
  }
  HoldStatus hold_status(const Hold& h) {
    return with_ledger([&](Ledger& l) { return l.hold_get(h.id); }).status;
  }
  Account wallet, clearing;
};

}  // namespace payq::testing
