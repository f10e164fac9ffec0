// Read-only ledger queries: history, transactions.
#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "payq/error.hpp"

namespace payq {

using namespace ledger_detail;

std::vector<Account> Ledger::accounts_list(std::int64_t after_id, std::int64_t limit,
                                          const std::optional<std::string>& owner) {
  if (after_id < 0) throw InvalidArgument("after_id cannot be negative");
  if (limit <= 0 || limit > history_page_size_max) {
    throw InvalidArgument("a page holds 1 to " + std::to_string(history_page_size_max) + " accounts");
  }
  Rows rows = executor_.exec(ledger_sql::accounts_list, {std::to_string(after_id), std::to_string(limit), owner});
  std::vector<Account> accounts;
  accounts.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    Account account = account_from(rows, i);
    account.pending_minor = rows.i64(i, "pending");
    accounts.push_back(std::move(account));
  }
  return accounts;
}

std::vector<Entry> Ledger::history(std::int64_t account_id, std::int64_t after_seq, std::int64_t limit) {
  id_validate(account_id, "account");
  if (after_seq < 0) throw InvalidArgument("after_seq cannot be negative");
  if (limit <= 0 || limit > history_page_size_max) {
    throw InvalidArgument("a history page holds 1 to " + std::to_string(history_page_size_max) + " entries");
  }
  Rows rows = executor_.exec(ledger_sql::history,
                             {std::to_string(account_id), std::to_string(after_seq), std::to_string(limit)});
  std::vector<Entry> entries;
  entries.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    Entry entry;
    entry.transaction_id = rows.i64(i, "transaction_id");
    entry.account_id = rows.i64(i, "account_id");
    entry.currency = rows.text(i, "currency");
    entry.amount_minor = rows.i64(i, "amount");
    entry.seq = rows.i64(i, "seq");
    entry.balance_after = rows.i64(i, "balance_after");
    entry.created_at = rows.text(i, "created_at");
    entries.push_back(std::move(entry));
  }
  return entries;
}

LedgerTransaction Ledger::transaction_get(std::int64_t transaction_id) {
  id_validate(transaction_id, "transaction");
  const std::string id_text = std::to_string(transaction_id);
  Rows header = executor_.exec(ledger_sql::transaction_by_id, {id_text});
  if (header.empty()) throw InvalidArgument("no transaction with id " + id_text);
  LedgerTransaction tx;
  tx.id = transaction_id;
  tx.key = header.text(0, "key");
  tx.kind = header.text(0, "kind");
  tx.metadata_json = header.text(0, "metadata");
  tx.reverses_id = header.i64_or_null(0, "reverses_id");
  tx.hold_id = header.i64_or_null(0, "hold_id");
  tx.reversed_minor = header.i64_or_null(0, "reversed_minor");
  tx.created_at = header.text(0, "created_at");
  Rows legs = executor_.exec(ledger_sql::transaction_legs, {id_text});
  for (std::size_t i = 0; i < legs.size(); ++i) {
    Entry entry;
    entry.transaction_id = transaction_id;
    entry.account_id = legs.i64(i, "account_id");
    entry.currency = legs.text(i, "currency");
    entry.amount_minor = legs.i64(i, "amount");
    entry.seq = legs.i64_or_null(i, "seq");
    entry.balance_after = legs.i64_or_null(i, "balance_after");
    entry.created_at = legs.text(i, "created_at");
    tx.entries.push_back(std::move(entry));
  }
  return tx;
}

std::optional<LedgerTransaction> Ledger::transaction_find(const std::string& key) {
  key_validate(key);
  Rows rows = executor_.exec(ledger_sql::transaction_by_key, {key});
  if (rows.empty()) return std::nullopt;
  return transaction_get(rows.i64(0, "id"));
}

}  // namespace payq
