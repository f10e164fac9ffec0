// Helpers shared by the ledger tests.
#pragma once

#include <string>

#include "harness.hpp"
#include "payq/ledger.hpp"

namespace payq::testing {

class LedgerTest : public DbTest {
 protected:
  template <typename Work>
  auto with_ledger(Work&& work) {
    return db->transact([&](Transaction& tx) {
      Ledger ledger(tx);
      return work(ledger);
    });
  }

  Account open(const std::string& owner, const std::string& currency = "CNY", bool allow_negative = false) {
    return with_ledger([&](Ledger& l) {
      AccountOpen request;
      request.owner = owner;
      request.currency = currency;
      request.allow_negative = allow_negative;
      return l.account_open(request);
    });
  }

  Account account(std::int64_t id) {
    return with_ledger([&](Ledger& l) { return l.account_get(id); });
  }

  // Funds `target` from a per-currency "world" account that may go negative.
  void fund(const Account& target, std::int64_t amount_minor) {
    Account world = open("world", target.currency, true);
    static int counter = 0;
    transfer(world.id, target.id, amount_minor, "fund-" + std::to_string(++counter) + "-" + schema);
  }

  LedgerTransaction transfer(std::int64_t source, std::int64_t target, std::int64_t amount_minor,
                             const std::string& key) {
    return with_ledger([&](Ledger& l) {
      TransferRequest request;
      request.key = key;
      request.source_id = source;
      request.target_id = target;
      request.amount_minor = amount_minor;
      return l.transfer(request);
    });
  }

  std::int64_t count(const std::string& table) {
    return db->transact(
        [&](Transaction& tx) { return tx.exec_sql("SELECT count(*) AS n FROM @schema@." + table).i64(0, "n"); });
  }

  void expect_audit_clean() {
    AuditReport report = with_ledger([](Ledger& l) { return l.audit(); });
    for (const auto& v : report.violations) ADD_FAILURE() << v.check << " " << v.subject << ": " << v.detail;
  }
};

}  // namespace payq::testing
