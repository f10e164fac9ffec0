// A withdrawal in C++, end to end: the user's balance is held and the
// payout task enqueued in one transaction; a worker with a C++ handler
// "pays" and the task's success captures the hold into the provider's
// clearing account. Run it twice: every write carries an idempotency key,
// so the second run changes nothing.
//
// Database: PAYQ_DSN if set, else payq's embedded server; schema PAYQ_SCHEMA
// (default "payq"). Exit status 0 only if the payout settled and the
// ledger audit is clean.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <payq/database.hpp>
#include <payq/error.hpp>
#include <payq/handler.hpp>
#include <payq/ledger.hpp>
#include <payq/migrate.hpp>
#include <payq/money.hpp>
#include <payq/outbox.hpp>
#include <payq/worker.hpp>

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// Cents of CNY as text, for the printout.
std::string cny(std::int64_t amount_minor) { return payq::amount_format(amount_minor, 2) + " CNY"; }

}  // namespace

int main() {
  try {
    payq::DatabaseOptions options;
    options.schema = env_or("PAYQ_SCHEMA", "payq");
    payq::Database db(options);  // PAYQ_DSN, else the embedded server
    payq::migrate(db);

    payq::Account user, world, clearing;
    std::int64_t task_id = 0;
    db.transact([&](payq::Transaction& tx) {
      payq::Ledger ledger(tx);
      world = ledger.account_open({"world", "CNY", "system", /*allow_negative=*/true});
      clearing = ledger.account_open({"provider-clearing", "CNY", "system", /*allow_negative=*/true});
      user = ledger.account_open({"user:cpp-1", "CNY"});

      payq::TransferRequest topup;
      topup.key = "cpp-example/topup";
      topup.source_id = world.id;
      topup.target_id = user.id;
      topup.amount_minor = 100'00;
      ledger.transfer(topup);

      // The hold and the task commit together, or neither does.
      const payq::Hold hold = ledger.hold({"cpp-example/withdrawal-1", user.id, 30'00});
      payq::TaskSpec payout;
      payout.kind = "payout";
      payout.payload_json = R"({"account": "wallet:cpp-1", "amount_minor": 3000, "currency": "CNY"})";
      payout.unique_key = "cpp-example/withdrawal-1";
      payout.amount_minor = 30'00;
      payout.currency = "CNY";
      payout.settlement.hold_id = hold.id;
      payout.settlement.capture_account_id = clearing.id;
      task_id = payq::Outbox(tx).enqueue(payout).task_id;
    });
    std::cout << "enqueued payout task " << task_id << "\n";

    std::atomic<int> paid{0};
    payq::HandlerRegistry registry;
    registry.add("payout", [&](const payq::Task& task, const payq::TaskContext&) -> payq::HandlerResult {
      // A real handler calls the provider with task.idempotency_key.
      paid += 1;
      return payq::Outcome{payq::OutcomeKind::success,
                           R"({"provider_ref": ")" + task.idempotency_key + R"("})"};
    });
    payq::WorkerOptions worker_options;
    worker_options.concurrency = 2;
    worker_options.poll_interval = std::chrono::milliseconds(50);
    worker_options.log_sink = [](const std::string&) {};  // quiet for the example
    payq::Worker worker(db, registry, worker_options);
    worker.start();

    payq::TaskState state = payq::TaskState::pending;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      db.transact([&](payq::Transaction& tx) { state = payq::Outbox(tx).task_get(task_id).state; });
      if (state == payq::TaskState::succeeded || state == payq::TaskState::dead) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    worker.stop();

    bool ok = state == payq::TaskState::succeeded;
    db.transact([&](payq::Transaction& tx) {
      payq::Ledger ledger(tx);
      const payq::Account after = ledger.account_get(user.id);
      std::cout << "task " << task_id << ": " << payq::task_state_name(state) << " (handler ran " << paid.load()
                << " time(s) in this run)\n"
                << "user balance " << cny(after.balance_minor) << ", held " << cny(after.held_minor) << "\n";
      const payq::AuditReport audit = ledger.audit();
      std::cout << "audit: " << (audit.ok() ? "clean" : "VIOLATIONS") << " (" << audit.accounts_checked
                << " accounts, " << audit.entries_checked << " entries)\n";
      ok = ok && audit.ok() && after.balance_minor == 70'00 && after.held_minor == 0;
    });
    return ok ? 0 : 1;
  } catch (const payq::Error& e) {
    std::cerr << "payq error: " << e.what() << "\n";
    return 2;
  }
}
