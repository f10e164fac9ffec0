// Shared by the ledger's source files: validation, request hashing, row
// conversion, and the posting engine every journal-writing operation uses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "payq/db.hpp"
#include "payq/ledger.hpp"
#include "common/text_internal.hpp"

namespace payq::ledger_detail {

void key_validate(const std::string& key);
void id_validate(std::int64_t id, const char* what);
// The kind a posting is journaled under: `kind`, checked like other stored
// text (1..posting_kind_bytes_max bytes, no control character), or
// `fallback` when it is empty.
std::string posting_kind(const std::string& kind, const char* fallback);
// Parses a JSON object and returns its canonical text (sorted keys);
// InvalidArgument for anything else or beyond metadata_bytes_max.
std::string metadata_canonical(const std::string& json_text);
using detail::request_hash;

std::string array_text(const std::vector<std::int64_t>& values);
Value optional_text(const std::optional<std::int64_t>& value);

Account account_from(const Rows& rows, std::size_t row);
Hold hold_from(const Rows& rows, std::size_t row);
// With the hold's row locked: HoldInUse unless the hold has no live owning
// task or the caller is that task (`by_task_id`). `action` is a verb
// ("captured", "released") for the message.
void hold_owner_check(Executor& executor, const Hold& hold, const std::optional<std::int64_t>& by_task_id,
                      const char* action);
// True when the caller is the task that owns the hold.
inline bool hold_owned_by(const Hold& hold, const std::optional<std::int64_t>& by_task_id) {
  return hold.task_id && by_task_id && *hold.task_id == *by_task_id;
}
HoldStatus hold_status_parse(const std::string& name);

// The recorded operation for `key`, if any.
struct OperationRecord {
  std::string kind;
  std::string request_hash;
  std::optional<std::int64_t> hold_id;
};
// The operation recorded under `key` by this same request, if any; an
// IdempotencyConflict when a different request recorded it. Every replay
// starts here.
std::optional<OperationRecord> operation_recorded(Executor& executor, const std::string& key,
                                                  const std::string& request_hash);

// Limits: rules as read by posting_lock, checked against one outgoing amount
// and today's usage, read fresh (the caller holds the account's lock).
void limits_check(Executor& executor, const Rows& rows, std::size_t row, std::int64_t amount_minor,
                  std::int64_t account_id);
bool limits_present(const Rows& rows, std::size_t row);

// A fold decided but not yet written: the pending credits of a locked
// deferred-credit account, and the (balance, seq) they lead to. Operations
// decide on the folded balance and call pending_fold_write only once they
// write, so a refused or replayed request leaves the account as it was.
struct PendingFold {
  std::int64_t account_id = 0;
  std::string ids;  // PostgreSQL array text
  std::int64_t count = 0;
  std::int64_t total_minor = 0;
  std::int64_t balance_before_minor = 0;
  std::int64_t seq_before = 0;
  std::int64_t balance_after_minor() const { return amount_add(balance_before_minor, total_minor); }
  std::int64_t seq_after() const { return seq_before + count; }
};
PendingFold pending_fold_peek(Executor& executor, std::int64_t account_id, std::int64_t balance, std::int64_t seq,
                              std::int64_t count_max);
void pending_fold_write(Executor& executor, const PendingFold& fold);

// Everything a journal-writing operation decides before the engine runs.
struct PostingPlan {
  std::string key;
  std::string op_kind;
  std::string request_hash;
  std::string transaction_kind;
  std::string metadata_json;  // canonical
  std::vector<Leg> legs;
  bool single_currency = false;  // CurrencyMismatch unless all legs share one
  std::optional<std::int64_t> hold_id;         // capture: the hold, also recorded on the operation
  std::optional<std::int64_t> captured_minor;  // capture
  std::optional<std::int64_t> held_release_account_id;  // capture: the hold's account
  std::int64_t held_release_minor = 0;                  // capture: the hold's amount, taken off `held`
  std::optional<std::int64_t> reverses_id;
  std::optional<std::int64_t> reversed_minor;
  std::optional<std::int64_t> limit_account_id;  // outgoing money subject to limits
  std::int64_t limit_amount_minor = 0;
};

LedgerTransaction posting_execute(Executor& executor, const PostingPlan& plan);
// The transaction recorded under `key`, marked replayed.
LedgerTransaction transaction_replay(Executor& executor, const std::string& key);

}  // namespace payq::ledger_detail
