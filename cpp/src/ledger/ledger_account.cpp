// Accounts: open-or-get, look-up, close, custom currencies, explicit locks.
#include <algorithm>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "common/text_internal.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"

namespace payq {

using namespace ledger_detail;

namespace {

constexpr std::size_t owner_bytes_max = 200;
constexpr std::size_t namespace_bytes_max = 100;

}  // namespace

void Ledger::currency_define(const std::string& code, int exponent) {
  currency_register(code, exponent);  // validates code and exponent
  Rows rows = executor_.exec(ledger_sql::currency_insert, {code, std::to_string(exponent)});
  if (!rows.empty() && rows.i64(0, "exponent") != exponent) {
    throw InvalidArgument("currency " + code + " is already defined with exponent " + rows.text(0, "exponent"));
  }
}

std::int64_t Ledger::currencies_load() {
  Rows rows = executor_.exec(ledger_sql::currencies_all, {});
  std::int64_t registered = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::string code = rows.text(i, "code");
    if (currency_known(code)) continue;
    currency_register(code, static_cast<int>(rows.i64(i, "exponent")));
    ++registered;
  }
  return registered;
}

Account Ledger::account_open(const AccountOpen& request) {
  detail::text_bounded(request.owner, owner_bytes_max, "owner");
  detail::text_bounded(request.ns, namespace_bytes_max, "namespace");
  if (request.overdraft_minor < 0) throw InvalidAmount("an overdraft cannot be negative");
  if (!currency_known(request.currency)) {
    // A custom currency defined by another process lives in the database.
    Rows rows = executor_.exec(ledger_sql::currency_lookup, {request.currency});
    if (rows.empty()) throw UnknownCurrency("unknown currency '" + request.currency + "'");
    currency_register(request.currency, static_cast<int>(rows.i64(0, "exponent")));
  }
  const Params params = {request.owner,
                         request.ns,
                         request.currency,
                         request.allow_negative ? "t" : "f",
                         std::to_string(request.overdraft_minor),
                         request.deferred_credit ? "t" : "f"};
  // A concurrent open of the same account commits between our insert and
  // our read; the second attempt sees it.
  constexpr int attempt_count_max = 3;
  for (int attempt = 0; attempt < attempt_count_max; ++attempt) {
    Rows rows = executor_.exec(ledger_sql::account_open, params);
    if (!rows.empty()) return account_get(rows.i64(0, "id"));
  }
  throw DatabaseError("account (" + request.owner + ", " + request.ns + ", " + request.currency +
                      ") could be neither created nor found");
}

Account Ledger::account_get(std::int64_t account_id) {
  id_validate(account_id, "account");
  Rows rows = executor_.exec(ledger_sql::account_get, {std::to_string(account_id)});
  if (rows.empty()) throw UnknownAccount("no account with id " + std::to_string(account_id));
  Account account = account_from(rows, 0);
  account.pending_minor = rows.i64(0, "pending");
  return account;
}

std::optional<Account> Ledger::account_find(const std::string& owner, const std::string& ns,
                                            const std::string& currency) {
  Rows rows = executor_.exec(ledger_sql::account_find, {owner, ns, currency});
  if (rows.empty()) return std::nullopt;
  return account_get(rows.i64(0, "id"));
}

Account Ledger::account_close(std::int64_t account_id) {
  accounts_lock({account_id});
  Account account = account_get(account_id);
  if (account.balance_minor != 0 || account.held_minor != 0 || account.pending_minor != 0) {
    throw InvalidState("account " + std::to_string(account_id) + " can only be closed when balance, held and pending are 0");
  }
  executor_.exec(ledger_sql::account_close, {std::to_string(account_id)});
  account.closed = true;
  return account;
}

void Ledger::accounts_lock(std::vector<std::int64_t> account_ids) {
  for (std::int64_t id : account_ids) id_validate(id, "account");
  std::sort(account_ids.begin(), account_ids.end());
  account_ids.erase(std::unique(account_ids.begin(), account_ids.end()), account_ids.end());
  Rows rows = executor_.exec(ledger_sql::accounts_lock, {array_text(account_ids)});
  if (rows.size() != account_ids.size()) throw UnknownAccount("some of the accounts to lock do not exist");
}

std::int64_t Ledger::pending_fold(std::int64_t account_id, std::int64_t count_max) {
  id_validate(account_id, "account");
  if (count_max <= 0) throw InvalidArgument("count_max must be positive");
  Rows locked = executor_.exec(ledger_sql::account_lock_one, {std::to_string(account_id)});
  if (locked.empty()) throw UnknownAccount("no account with id " + std::to_string(account_id));
  const PendingFold fold =
      pending_fold_peek(executor_, account_id, locked.i64(0, "balance"), locked.i64(0, "seq"), count_max);
  pending_fold_write(executor_, fold);
  return fold.count;
}

}  // namespace payq
