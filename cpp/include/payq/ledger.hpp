// The double-entry ledger: accounts, an append-only journal, holds,
// reversals and limits. Every write takes an idempotency key and runs on an
// Executor, so it composes with the caller's transaction (payq's own or the
// application's). Amounts are int64 minor units.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "payq/db.hpp"
#include "payq/money.hpp"

namespace payq {

// ---------------------------------------------------------------- values

struct Account {
  std::int64_t id = 0;
  std::string owner;
  std::string ns;  // "namespace"
  std::string currency;
  std::int64_t balance_minor = 0;  // journaled balance
  std::int64_t held_minor = 0;
  std::int64_t pending_minor = 0;  // credits not yet folded (deferred_credit accounts)
  std::int64_t seq = 0;
  bool allow_negative = false;
  std::int64_t overdraft_minor = 0;
  bool deferred_credit = false;
  bool closed = false;

  // What may be spent now: balance - held (pending credits are not yet spendable).
  std::int64_t available_minor() const { return amount_sub(balance_minor, held_minor); }
};

// A journal line, identified by (account_id, seq) once journaled.
struct Entry {
  std::int64_t transaction_id = 0;
  std::int64_t account_id = 0;
  std::string currency;  // the account's
  std::int64_t amount_minor = 0;
  std::optional<std::int64_t> seq;            // nullopt while pending
  std::optional<std::int64_t> balance_after;  // nullopt while pending
  std::string created_at;
};

struct LedgerTransaction {
  std::int64_t id = 0;
  std::string key;
  std::string kind;
  std::string metadata_json;
  std::optional<std::int64_t> reverses_id;
  std::optional<std::int64_t> hold_id;
  std::optional<std::int64_t> reversed_minor;
  std::string created_at;
  std::vector<Entry> entries;  // in leg order
  bool replayed = false;       // true: the key was already done; nothing changed
};

enum class HoldStatus { active, captured, released, expired };
const char* hold_status_name(HoldStatus status);

struct Hold {
  std::int64_t id = 0;
  std::string key;
  std::int64_t account_id = 0;
  std::string currency;  // the account's
  std::int64_t amount_minor = 0;
  std::int64_t captured_minor = 0;
  HoldStatus status = HoldStatus::active;
  std::optional<std::string> expires_at;
  std::string metadata_json;
  // The task whose settlement owns this hold, if a task was given it to
  // settle. While that task is live, the hold cannot expire and only the
  // task's settlement (or an operator's action on it) captures or releases it.
  std::optional<std::int64_t> task_id;
  bool replayed = false;
};

// ---------------------------------------------------------------- requests

struct AccountOpen {
  std::string owner;
  std::string currency;
  std::string ns = "default";
  bool allow_negative = false;
  std::int64_t overdraft_minor = 0;
  bool deferred_credit = false;
};

struct Leg {
  std::int64_t account_id = 0;
  std::int64_t amount_minor = 0;  // negative: debit, positive: credit
};

struct PostRequest {
  std::string key;
  std::vector<Leg> legs;
  std::string kind = "post";
  std::string metadata_json = "{}";
};

enum class FeePayer { source, target };

struct TransferRequest {
  std::string key;
  std::int64_t source_id = 0;
  std::int64_t target_id = 0;
  std::int64_t amount_minor = 0;
  std::optional<Fee> fee;
  std::optional<std::int64_t> fee_account_id;
  // source: the source pays amount + fee; target: the fee comes out of what
  // the target receives.
  FeePayer fee_payer = FeePayer::source;
  std::string kind = "transfer";
  std::string metadata_json = "{}";
};

struct HoldRequest {
  std::string key;
  std::int64_t account_id = 0;
  std::int64_t amount_minor = 0;
  std::optional<std::int64_t> expires_in_ms;
  std::string metadata_json = "{}";
};

struct CaptureRequest {
  std::string key;
  std::int64_t hold_id = 0;
  std::int64_t target_id = 0;
  std::optional<std::int64_t> amount_minor;  // nullopt: the whole hold
  std::string kind = "capture";
  std::string metadata_json = "{}";
  // Set by the outbox only: the task settling the hold it owns.
  std::optional<std::int64_t> by_task_id;
};

struct ReleaseRequest {
  std::string key;
  std::int64_t hold_id = 0;
  // Set by the outbox only: the task settling the hold it owns.
  std::optional<std::int64_t> by_task_id;
};

struct ReverseRequest {
  std::string key;
  std::int64_t transaction_id = 0;
  std::optional<std::int64_t> amount_minor;  // nullopt: all that remains
  std::string kind = "reversal";
  std::string metadata_json = "{}";
};

enum class LimitKind { per_transaction_max, daily_count, daily_amount };
const char* limit_kind_name(LimitKind kind);
LimitKind limit_kind_parse(const std::string& name);

struct LimitRule {
  std::optional<std::int64_t> account_id;  // one account, or
  std::optional<std::string> ns;           // each account in namespace + currency
  std::optional<std::string> currency;
  LimitKind kind = LimitKind::per_transaction_max;
  std::int64_t value = 0;  // minor units, or a count for daily_count
};

struct AuditViolation {
  std::string check;  // e.g. "balance_equals_entries"
  std::string subject;  // e.g. "account 7", "currency CNY"
  std::string detail;
};

struct AuditReport {
  std::vector<AuditViolation> violations;
  std::int64_t accounts_checked = 0;
  std::int64_t entries_checked = 0;
  bool ok() const { return violations.empty(); }
};

// ---------------------------------------------------------------- operations

// Bounds, named once.
inline constexpr std::size_t idempotency_key_bytes_max = 255;
inline constexpr std::size_t posting_kind_bytes_max = 200;  // as a task kind
inline constexpr std::size_t legs_count_max = 64;
inline constexpr std::size_t metadata_bytes_max = 16 * 1024;
inline constexpr std::int64_t history_page_size_max = 1000;
inline constexpr std::int64_t hold_expires_in_ms_max = 366LL * 24 * 3600 * 1000;

class Ledger {
 public:
  explicit Ledger(Executor& executor) : executor_(executor) {}

  // Opening twice returns the same account (flags of the first open stay).
  Account account_open(const AccountOpen& request);
  Account account_get(std::int64_t account_id);
  std::optional<Account> account_find(const std::string& owner, const std::string& ns, const std::string& currency);
  // Only an account with zero balance, held and pending can be closed.
  Account account_close(std::int64_t account_id);
  void currency_define(const std::string& code, int exponent);
  // Registers in this process every custom currency defined in the
  // database (by any process); returns how many were new here. Run when
  // connecting, so reads of accounts in such currencies can format them.
  std::int64_t currencies_load();

  LedgerTransaction post(const PostRequest& request);
  LedgerTransaction transfer(const TransferRequest& request);
  Hold hold(const HoldRequest& request);
  LedgerTransaction capture(const CaptureRequest& request);
  Hold release(const ReleaseRequest& request);
  LedgerTransaction reverse(const ReverseRequest& request);

  // Locks accounts in the canonical order, for callers composing several
  // operations on overlapping accounts in one outer transaction.
  void accounts_lock(std::vector<std::int64_t> account_ids);

  // Maintenance. Each handles at most `count_max` rows and returns how many.
  std::int64_t holds_expire(std::int64_t count_max);
  std::int64_t pending_fold(std::int64_t account_id, std::int64_t count_max);

  void limit_set(const LimitRule& rule);
  void limit_remove(const LimitRule& rule);

  // Queries.
  // Accounts by id, after `after_id`, optionally of one owner; paged.
  std::vector<Account> accounts_list(std::int64_t after_id, std::int64_t limit,
                                     const std::optional<std::string>& owner = std::nullopt);
  std::vector<Entry> history(std::int64_t account_id, std::int64_t after_seq, std::int64_t limit);
  LedgerTransaction transaction_get(std::int64_t transaction_id);
  std::optional<LedgerTransaction> transaction_find(const std::string& key);
  Hold hold_get(std::int64_t hold_id);

  AuditReport audit();

 private:
  Executor& executor_;
};

}  // namespace payq
