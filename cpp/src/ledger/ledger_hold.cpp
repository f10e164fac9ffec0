// Holds: reserve part of an account's balance, then capture or release it.
#include <algorithm>
#include <set>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"
#include "payq/tracing.hpp"

namespace payq {

using namespace ledger_detail;

const char* hold_status_name(HoldStatus status) {
  switch (status) {
    case HoldStatus::active: return "active";
    case HoldStatus::captured: return "captured";
    case HoldStatus::released: return "released";
    case HoldStatus::expired: return "expired";
  }
  return "unknown";
}

namespace {

Hold hold_replay(Ledger& ledger, Executor& executor, const std::string& key) {
  Rows found = executor.exec(ledger_sql::hold_by_key, {key});
  if (found.empty()) throw DatabaseError("operation '" + key + "' is recorded but its hold is missing");
  Hold hold = ledger.hold_get(found.i64(0, "id"));
  hold.replayed = true;
  return hold;
}

}  // namespace

namespace ledger_detail {

void hold_owner_check(Executor& executor, const Hold& hold, const std::optional<std::int64_t>& by_task_id,
                      const char* action) {
  if (!hold.task_id || hold_owned_by(hold, by_task_id)) return;
  Rows live = executor.exec(ledger_sql::hold_task_live, {std::to_string(*hold.task_id)});
  if (live.empty()) return;  // its task is final (or pruned): the hold is anyone's again
  throw HoldInUse("hold " + std::to_string(hold.id) + " is settled by task " + std::to_string(*hold.task_id) + " (" +
                      live.text(0, "state") + "); only that task, or an operator's action on it, can have it " +
                      action,
                  *hold.task_id);
}

}  // namespace ledger_detail

Hold Ledger::hold(const HoldRequest& request) {
  tracing::Span span("payq.ledger.hold");
  span.set("payq.ledger.account_id", request.account_id);
  key_validate(request.key);
  id_validate(request.account_id, "account");
  if (request.amount_minor <= 0) throw InvalidAmount("a hold amount must be positive");
  if (request.expires_in_ms && (*request.expires_in_ms <= 0 || *request.expires_in_ms > hold_expires_in_ms_max)) {
    throw InvalidArgument("a hold expires between 1 ms and 366 days from now");
  }
  const std::string metadata = metadata_canonical(request.metadata_json);
  const std::string hash = request_hash(
      "hold|" + std::to_string(request.account_id) + "|" + std::to_string(request.amount_minor) + "|" +
      (request.expires_in_ms ? std::to_string(*request.expires_in_ms) : "never") + "|" + metadata);
  const std::string account_text = std::to_string(request.account_id);

  Rows rows = executor_.exec(ledger_sql::posting_lock, {"{" + account_text + "}", "{}", account_text});
  Account account;
  std::optional<PendingFold> fold;  // written only if the hold is
  try {
    if (rows.empty()) throw UnknownAccount("no account with id " + account_text);
    account = account_from(rows, 0);
    if (account.closed) throw AccountClosed("account " + account_text + " is closed");
    if (account.deferred_credit && rows.boolean(0, "pending_any")) {
      constexpr std::int64_t fold_count_max = 1'000'000;
      fold = pending_fold_peek(executor_, account.id, account.balance_minor, account.seq, fold_count_max);
      account.balance_minor = fold->balance_after_minor();
    }
    const std::int64_t available = account.available_minor();
    if (!account.allow_negative && amount_sub(available, request.amount_minor) < -account.overdraft_minor) {
      throw InsufficientFunds("account " + account_text + " has " + money_text(available, account.currency) +
                              " available, " + money_text(request.amount_minor, account.currency) + " needed");
    }
    limits_check(executor_, rows, 0, request.amount_minor, account.id);
  } catch (const DatabaseError&) {
    throw;
  } catch (const Error&) {
    // Refused on the state found now; a key used before answers with that
    // request's result (or a conflict) instead, as for any replay.
    if (operation_recorded(executor_, request.key, hash)) return hold_replay(*this, executor_, request.key);
    throw;
  }

  if (fold) {
    // A replay must not fold: it leaves the account exactly as it was.
    if (operation_recorded(executor_, request.key, hash)) return hold_replay(*this, executor_, request.key);
    pending_fold_write(executor_, *fold);
  }
  Rows written = executor_.exec(
      ledger_sql::hold_write, {request.key, hash, account_text, std::to_string(request.amount_minor),
                               optional_text(request.expires_in_ms), metadata, limits_present(rows, 0) ? "t" : "f"});
  if (written.empty()) {
    if (!operation_recorded(executor_, request.key, hash)) {
      throw DatabaseError("hold for key '" + request.key + "' was neither written nor recorded");
    }
    return hold_replay(*this, executor_, request.key);
  }
  Hold hold;
  hold.id = written.i64(0, "id");
  hold.key = request.key;
  hold.account_id = request.account_id;
  hold.currency = account.currency;
  hold.amount_minor = request.amount_minor;
  hold.status = HoldStatus::active;
  hold.expires_at = written.at(0, "expires_at");
  hold.metadata_json = metadata;
  span.set("payq.ledger.hold_id", hold.id);
  span.set("payq.ledger.currency", hold.currency);
  return hold;
}

Hold Ledger::release(const ReleaseRequest& request) {
  tracing::Span span("payq.ledger.release");
  span.set("payq.ledger.hold_id", request.hold_id);
  key_validate(request.key);
  id_validate(request.hold_id, "hold");
  const std::string hold_text = std::to_string(request.hold_id);
  const std::string hash = request_hash("release|" + hold_text);
  auto replay = [&](const OperationRecord& record) {
    Hold hold = hold_get(record.hold_id.value_or(request.hold_id));
    hold.replayed = true;
    return hold;
  };
  if (auto record = operation_recorded(executor_, request.key, hash)) return replay(*record);

  Rows locked = executor_.exec(ledger_sql::hold_lock, {hold_text});
  if (locked.empty()) throw InvalidArgument("no hold with id " + hold_text);
  Hold hold = hold_from(locked, 0);
  if (hold.status != HoldStatus::active) {
    throw InvalidState("hold " + hold_text + " is " + hold_status_name(hold.status) +
                       "; only an active hold can be released");
  }
  hold_owner_check(executor_, hold, request.by_task_id, "released");
  Rows written = executor_.exec(ledger_sql::hold_finish, {request.key, hash, hold_text});
  if (written.empty()) {
    auto record = operation_recorded(executor_, request.key, hash);
    if (!record) throw DatabaseError("release for key '" + request.key + "' was neither written nor recorded");
    return replay(*record);
  }
  hold.status = HoldStatus::released;
  span.set("payq.ledger.currency", hold.currency);
  return hold;
}

std::int64_t Ledger::holds_expire(std::int64_t count_max) {
  if (count_max <= 0) throw InvalidArgument("count_max must be positive");
  Rows expired = executor_.exec(ledger_sql::holds_expired_lock, {std::to_string(count_max)});
  if (expired.empty()) return 0;
  std::vector<std::int64_t> hold_ids;
  std::set<std::int64_t> account_ids;
  for (std::size_t i = 0; i < expired.size(); ++i) {
    hold_ids.push_back(expired.i64(i, "id"));
    account_ids.insert(expired.i64(i, "account_id"));
  }
  // Holds first, then accounts in id order: the order every payq operation uses.
  executor_.exec(ledger_sql::accounts_lock, {array_text({account_ids.begin(), account_ids.end()})});
  executor_.exec(ledger_sql::holds_expire, {array_text(hold_ids)});
  return static_cast<std::int64_t>(hold_ids.size());
}

Hold Ledger::hold_get(std::int64_t hold_id) {
  id_validate(hold_id, "hold");
  Rows rows = executor_.exec(ledger_sql::hold_get, {std::to_string(hold_id)});
  if (rows.empty()) throw InvalidArgument("no hold with id " + std::to_string(hold_id));
  return hold_from(rows, 0);
}

}  // namespace payq
