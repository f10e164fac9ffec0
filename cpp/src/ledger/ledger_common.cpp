#include <nlohmann/json.hpp>

#include <cstdio>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "common/text_internal.hpp"
#include "payq/error.hpp"

namespace payq::ledger_detail {

void key_validate(const std::string& key) { detail::text_bounded(key, idempotency_key_bytes_max, "idempotency key"); }

void id_validate(std::int64_t id, const char* what) {
  if (id <= 0) throw InvalidArgument(std::string(what) + " id must be positive, got " + std::to_string(id));
}

std::string posting_kind(const std::string& kind, const char* fallback) {
  if (kind.empty()) return fallback;
  detail::text_bounded(kind, posting_kind_bytes_max, "posting kind");
  return kind;
}

std::string metadata_canonical(const std::string& json_text) {
  if (json_text.size() > metadata_bytes_max) {
    throw InvalidArgument("metadata is larger than " + std::to_string(metadata_bytes_max) + " bytes");
  }
  const nlohmann::json parsed = detail::json_input_parse(json_text.empty() ? "{}" : json_text, "metadata");
  if (!parsed.is_object()) throw InvalidArgument("metadata must be a JSON object");
  return parsed.dump();
}

std::string array_text(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out.push_back(',');
    out += std::to_string(values[i]);
  }
  out.push_back('}');
  return out;
}

Value optional_text(const std::optional<std::int64_t>& value) {
  if (!value) return std::nullopt;
  return std::to_string(*value);
}

Account account_from(const Rows& rows, std::size_t row) {
  Account account;
  account.id = rows.i64(row, "id");
  account.owner = rows.text(row, "owner");
  account.ns = rows.text(row, "namespace");
  account.currency = rows.text(row, "currency");
  account.balance_minor = rows.i64(row, "balance");
  account.held_minor = rows.i64(row, "held");
  account.seq = rows.i64(row, "seq");
  account.allow_negative = rows.boolean(row, "allow_negative");
  account.overdraft_minor = rows.i64(row, "overdraft_minor");
  account.deferred_credit = rows.boolean(row, "deferred_credit");
  account.closed = rows.boolean(row, "closed");
  return account;
}

HoldStatus hold_status_parse(const std::string& name) {
  if (name == "active") return HoldStatus::active;
  if (name == "captured") return HoldStatus::captured;
  if (name == "released") return HoldStatus::released;
  if (name == "expired") return HoldStatus::expired;
  throw DatabaseError("unknown hold status in database: " + name);
}

Hold hold_from(const Rows& rows, std::size_t row) {
  Hold hold;
  hold.id = rows.i64(row, "id");
  hold.key = rows.text(row, "key");
  hold.account_id = rows.i64(row, "account_id");
  hold.currency = rows.text(row, "currency");
  hold.amount_minor = rows.i64(row, "amount");
  hold.captured_minor = rows.i64(row, "captured_minor");
  hold.status = hold_status_parse(rows.text(row, "status"));
  hold.expires_at = rows.at(row, "expires_at");
  hold.metadata_json = rows.text(row, "metadata");
  hold.task_id = rows.i64_or_null(row, "task_id");
  return hold;
}

std::optional<OperationRecord> operation_recorded(Executor& executor, const std::string& key,
                                                  const std::string& request_hash) {
  Rows rows = executor.exec(ledger_sql::operation_get, {key});
  if (rows.empty()) return std::nullopt;
  OperationRecord record{rows.text(0, "kind"), rows.text(0, "request_hash"), rows.i64_or_null(0, "hold_id")};
  if (record.request_hash != request_hash) {
    throw IdempotencyConflict("idempotency key '" + key + "' was already used for a different " + record.kind +
                              " request");
  }
  return record;
}

PendingFold pending_fold_peek(Executor& executor, std::int64_t account_id, std::int64_t balance, std::int64_t seq,
                              std::int64_t count_max) {
  Rows peeked = executor.exec(ledger_sql::pending_peek, {std::to_string(account_id), std::to_string(count_max)});
  PendingFold fold;
  fold.account_id = account_id;
  fold.ids = peeked.text(0, "ids");
  fold.count = peeked.i64(0, "folded");
  fold.total_minor = peeked.i64(0, "total");
  fold.balance_before_minor = balance;
  fold.seq_before = seq;
  return fold;
}

void pending_fold_write(Executor& executor, const PendingFold& fold) {
  if (fold.count == 0) return;
  Rows folded = executor.exec(ledger_sql::pending_fold_ids,
                              {std::to_string(fold.account_id), fold.ids, std::to_string(fold.seq_before),
                               std::to_string(fold.balance_before_minor)});
  // Only a fold under the account's lock deletes pending credits, and the
  // caller holds it: the credits peeked are the credits folded.
  if (folded.i64(0, "folded") != fold.count || folded.i64(0, "total") != fold.total_minor) {
    throw DatabaseError("pending credits of account " + std::to_string(fold.account_id) +
                        " changed under its lock while folding");
  }
}

}  // namespace payq::ledger_detail
