// The audit: re-checks from the journal every invariant the operations
// maintain, and reports every violation rather than the first.
#include <functional>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"

namespace payq {

namespace {

void collect(Executor& executor, const Statement& statement, std::vector<AuditViolation>& out,
             const std::function<AuditViolation(const Rows&, std::size_t)>& describe) {
  Rows rows = executor.exec(statement, {});
  for (std::size_t i = 0; i < rows.size(); ++i) out.push_back(describe(rows, i));
}

std::string account_subject(const Rows& rows, std::size_t i, const char* column = "id") {
  return "account " + rows.text(i, column);
}

}  // namespace

AuditReport Ledger::audit() {
  AuditReport report;
  Rows counts = executor_.exec(ledger_sql::audit_counts, {});
  report.accounts_checked = counts.i64(0, "accounts");
  report.entries_checked = counts.i64(0, "entries");
  auto& out = report.violations;

  collect(executor_, ledger_sql::audit_accounts, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"account_matches_journal", account_subject(r, i),
                          "balance " + r.text(i, "balance") + ", sum of entries " + r.text(i, "total") +
                              ", last balance_after " + r.text(i, "last_balance_after") + ", seq " +
                              r.text(i, "seq") + ", entries " + r.text(i, "n") + " (seq " + r.text(i, "seq_min") +
                              ".." + r.text(i, "seq_max") + ")"};
  });
  collect(executor_, ledger_sql::audit_entry_chain, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"entry_chain", account_subject(r, i, "account_id"),
                          "entry seq " + r.text(i, "seq") + ": previous balance_after " +
                              r.text(i, "prev_after") + " + amount " + r.text(i, "amount") + " != balance_after " +
                              r.text(i, "balance_after")};
  });
  collect(executor_, ledger_sql::audit_held, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"held_matches_active_holds", account_subject(r, i),
                          "held " + r.text(i, "held") + ", active holds " + r.text(i, "active_total")};
  });
  collect(executor_, ledger_sql::audit_currency_sum, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"currency_sums_to_zero", "currency " + r.text(i, "currency"),
                          "entries and pending credits sum to " + r.text(i, "total")};
  });
  collect(executor_, ledger_sql::audit_transaction_sum, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"transaction_balanced", "transaction " + r.text(i, "transaction_id"),
                          r.text(i, "currency") + " legs sum to " + r.text(i, "total")};
  });
  collect(executor_, ledger_sql::audit_floor, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"available_above_floor", account_subject(r, i),
                          "balance " + r.text(i, "balance") + " - held " + r.text(i, "held") + " is below -" +
                              r.text(i, "overdraft_minor")};
  });
  collect(executor_, ledger_sql::audit_reversals, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"reversal_within_original", "transaction " + r.text(i, "reverses_id"),
                          "reversed " + r.text(i, "reversed") + " of " + r.text(i, "original")};
  });
  collect(executor_, ledger_sql::audit_links, out, [](const Rows& r, std::size_t i) {
    return AuditViolation{"records_linked", r.text(i, "what") + " " + r.text(i, "id"), r.text(i, "problem")};
  });
  return report;
}

}  // namespace payq
