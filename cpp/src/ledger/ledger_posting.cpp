// The posting engine, and the operations that write journal entries:
// post, transfer, capture, reverse.
#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "ledger/ledger_internal.hpp"
#include "ledger/ledger_statements.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"
#include "payq/tracing.hpp"

namespace payq {
namespace ledger_detail {
namespace {

// An account as the posting sees it while it holds the lock.
struct AccountState {
  Account account;
  bool locked = false;
  std::size_t row = 0;  // in the posting_lock result
  bool pending_any = false;  // pending credits wait to be folded in
  std::int64_t net_minor = 0;  // this posting's net effect
};

// Each account appears in one leg at most: two legs on one account move
// nothing between accounts (a transfer to itself is refused the same way),
// and one net leg says the same thing as several.
void legs_validate(const std::vector<Leg>& legs) {
  if (legs.size() < 2) throw Unbalanced("a posting needs at least two legs");
  if (legs.size() > legs_count_max) {
    throw InvalidArgument("a posting has at most " + std::to_string(legs_count_max) + " legs");
  }
  std::set<std::int64_t> accounts;
  for (const Leg& leg : legs) {
    id_validate(leg.account_id, "account");
    if (leg.amount_minor == 0) throw InvalidAmount("a leg's amount cannot be zero");
    if (!accounts.insert(leg.account_id).second) {
      throw InvalidArgument("account " + std::to_string(leg.account_id) +
                            " appears in two legs of one posting; give it one net leg");
    }
  }
}

std::map<std::int64_t, AccountState> accounts_locked(Executor& executor, const PostingPlan& plan, Rows& rows) {
  std::set<std::int64_t> ids, debited;
  for (const Leg& leg : plan.legs) {
    ids.insert(leg.account_id);
    if (leg.amount_minor < 0) debited.insert(leg.account_id);
  }
  std::vector<std::int64_t> all(ids.begin(), ids.end()), credit_only;
  for (std::int64_t id : all) {
    if (!debited.count(id)) credit_only.push_back(id);
  }
  rows = executor.exec(ledger_sql::posting_lock,
                       {array_text(all), array_text(credit_only), optional_text(plan.limit_account_id)});
  std::map<std::int64_t, AccountState> accounts;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    AccountState state;
    state.account = account_from(rows, i);
    state.locked = rows.boolean(i, "locked");
    state.row = i;
    state.pending_any = rows.boolean(i, "pending_any");
    accounts.emplace(state.account.id, std::move(state));
  }
  return accounts;
}

void accounts_check(const PostingPlan& plan, std::map<std::int64_t, AccountState>& accounts) {
  std::map<std::string, std::int64_t> sum_by_currency;
  for (const Leg& leg : plan.legs) {
    auto found = accounts.find(leg.account_id);
    if (found == accounts.end()) throw UnknownAccount("no account with id " + std::to_string(leg.account_id));
    const Account& account = found->second.account;
    if (account.closed) throw AccountClosed("account " + std::to_string(account.id) + " is closed");
    auto& sum = sum_by_currency[account.currency];
    sum = amount_add(sum, leg.amount_minor);
    found->second.net_minor = amount_add(found->second.net_minor, leg.amount_minor);
  }
  if (plan.single_currency && sum_by_currency.size() > 1) {
    throw CurrencyMismatch("the accounts of this " + plan.op_kind + " are not all in one currency");
  }
  for (const auto& [currency, sum] : sum_by_currency) {
    if (sum != 0) {
      throw Unbalanced("legs in " + currency + " sum to " + std::to_string(sum) + ", not zero");
    }
  }
}

void funds_check(const AccountState& state) {
  const Account& account = state.account;
  if (state.net_minor >= 0 || account.allow_negative) return;
  const std::int64_t available = amount_sub(account.balance_minor, account.held_minor);
  if (available < -account.overdraft_minor) {
    throw InsufficientFunds("account " + std::to_string(account.id) + " has " +
                            money_text(amount_sub(available, state.net_minor), account.currency) + " available, " +
                            money_text(-state.net_minor, account.currency) + " needed");
  }
}

}  // namespace

LedgerTransaction transaction_replay(Executor& executor, const std::string& key) {
  Ledger ledger(executor);
  auto found = ledger.transaction_find(key);
  if (!found) throw DatabaseError("operation '" + key + "' is recorded but its transaction is missing");
  found->replayed = true;
  return *found;
}

namespace {

// What a posting writes, decided under the accounts' locks.
struct PostingRows {
  std::vector<std::int64_t> entry_account, entry_amount, entry_seq, entry_after, entry_leg;
  std::vector<std::int64_t> pending_account, pending_amount, pending_leg;
  std::vector<std::int64_t> update_id, update_balance, update_seq, update_held_release;
  bool track_limits = false;
  std::vector<PendingFold> folds;  // written just before the posting
  LedgerTransaction result;
};

// Throws the business error (unknown or closed account, insufficient
// funds, a limit...) that refuses the posting on the state it found.
PostingRows posting_compute(Executor& executor, const PostingPlan& plan, std::map<std::int64_t, AccountState>& accounts,
                            const Rows& rows) {
  accounts_check(plan, accounts);

  // A debited deferred-credit account is locked; its pending credits are
  // folded in first so the journal stays in order and the balance is
  // complete. Decided here, written by posting_execute only if it writes.
  constexpr std::int64_t fold_count_max = 1'000'000;
  PostingRows out;
  for (auto& [id, state] : accounts) {
    if (state.locked && state.account.deferred_credit && state.pending_any) {
      PendingFold fold = pending_fold_peek(executor, id, state.account.balance_minor, state.account.seq,
                                           fold_count_max);
      state.account.balance_minor = fold.balance_after_minor();
      state.account.seq = fold.seq_after();
      out.folds.push_back(std::move(fold));
    }
  }

  for (std::size_t leg_index = 0; leg_index < plan.legs.size(); ++leg_index) {
    const Leg& leg = plan.legs[leg_index];
    AccountState& state = accounts.at(leg.account_id);
    Entry entry;
    entry.account_id = leg.account_id;
    entry.currency = state.account.currency;
    entry.amount_minor = leg.amount_minor;
    if (state.locked) {
      state.account.balance_minor = amount_add(state.account.balance_minor, leg.amount_minor);
      state.account.seq += 1;
      entry.seq = state.account.seq;
      entry.balance_after = state.account.balance_minor;
      out.entry_account.push_back(leg.account_id);
      out.entry_amount.push_back(leg.amount_minor);
      out.entry_seq.push_back(state.account.seq);
      out.entry_after.push_back(state.account.balance_minor);
      out.entry_leg.push_back(static_cast<std::int64_t>(leg_index));
    } else {
      out.pending_account.push_back(leg.account_id);
      out.pending_amount.push_back(leg.amount_minor);
      out.pending_leg.push_back(static_cast<std::int64_t>(leg_index));
    }
    out.result.entries.push_back(entry);
  }

  for (auto& [id, state] : accounts) {
    if (!state.locked) continue;
    std::int64_t held_release = 0;
    if (plan.held_release_account_id == id) {
      held_release = plan.held_release_minor;
      state.account.held_minor = amount_sub(state.account.held_minor, held_release);
    }
    funds_check(state);
    out.update_id.push_back(id);
    out.update_balance.push_back(state.account.balance_minor);
    out.update_seq.push_back(state.account.seq);
    out.update_held_release.push_back(held_release);
  }

  if (plan.limit_account_id) {
    const AccountState& state = accounts.at(*plan.limit_account_id);
    limits_check(executor, rows, state.row, plan.limit_amount_minor, *plan.limit_account_id);
    out.track_limits = limits_present(rows, state.row);
  }

  return out;
}

// The value of one parameter of the posting's write. Only the parameters
// the shape's statement uses are asked for.
Value posting_value(const PostingPlan& plan, const PostingRows& w, ledger_sql::PostingParam param) {
  using ledger_sql::PostingParam;
  switch (param) {
    case PostingParam::key: return plan.key;
    case PostingParam::op_kind: return plan.op_kind;
    case PostingParam::request_hash: return plan.request_hash;
    case PostingParam::hold_id: return optional_text(plan.hold_id);
    case PostingParam::transaction_kind: return plan.transaction_kind;
    case PostingParam::metadata: return plan.metadata_json;
    case PostingParam::reverses_id: return optional_text(plan.reverses_id);
    case PostingParam::reversed_minor: return optional_text(plan.reversed_minor);
    case PostingParam::entry_account: return array_text(w.entry_account);
    case PostingParam::entry_amount: return array_text(w.entry_amount);
    case PostingParam::entry_seq: return array_text(w.entry_seq);
    case PostingParam::entry_balance_after: return array_text(w.entry_after);
    case PostingParam::entry_leg: return array_text(w.entry_leg);
    case PostingParam::update_account: return array_text(w.update_id);
    case PostingParam::update_balance: return array_text(w.update_balance);
    case PostingParam::update_seq: return array_text(w.update_seq);
    case PostingParam::update_held_release: return array_text(w.update_held_release);
    case PostingParam::pending_account: return array_text(w.pending_account);
    case PostingParam::pending_amount: return array_text(w.pending_amount);
    case PostingParam::pending_leg: return array_text(w.pending_leg);
    case PostingParam::captured_minor: return optional_text(plan.captured_minor);
    case PostingParam::limit_account: return optional_text(plan.limit_account_id);
    case PostingParam::limit_amount: return std::to_string(plan.limit_amount_minor);
    case PostingParam::count: break;
  }
  throw std::logic_error("posting write: a parameter without a value");
}

}  // namespace

LedgerTransaction posting_execute(Executor& executor, const PostingPlan& plan) {
  // One span per posting: its operation, kind, currency and ids only.
  tracing::Span span;
  if (tracing::enabled()) span = tracing::Span(("payq.ledger." + plan.op_kind).c_str());
  span.set("payq.ledger.kind", plan.transaction_kind);
  legs_validate(plan.legs);
  Rows rows;
  auto accounts = accounts_locked(executor, plan, rows);
  std::optional<PostingRows> computed;
  try {
    computed = posting_compute(executor, plan, accounts, rows);
  } catch (const DatabaseError&) {
    throw;
  } catch (const Error&) {
    // Refused on the state found now; but if the key was used before, the
    // answer is that request's result (or a conflict), as for any replay.
    if (operation_recorded(executor, plan.key, plan.request_hash)) return transaction_replay(executor, plan.key);
    throw;
  }
  const PostingRows& w = *computed;
  if (!w.folds.empty()) {
    // A replay must not fold: it leaves the accounts exactly as they were.
    if (operation_recorded(executor, plan.key, plan.request_hash)) return transaction_replay(executor, plan.key);
    for (const PendingFold& fold : w.folds) pending_fold_write(executor, fold);
  }
  const ledger_sql::PostingWrite& write =
      ledger_sql::posting_write({!w.pending_account.empty(), plan.captured_minor.has_value(), w.track_limits});
  Params params;
  params.reserve(write.params.size());
  for (const ledger_sql::PostingParam param : write.params) params.push_back(posting_value(plan, w, param));
  Rows written = executor.exec(write.statement, params);
  if (written.empty()) {
    // Another request took the key after our first read: it is that
    // request's result, or a conflict.
    if (!operation_recorded(executor, plan.key, plan.request_hash)) {
      throw DatabaseError("posting for key '" + plan.key + "' was neither written nor recorded");
    }
    return transaction_replay(executor, plan.key);
  }

  LedgerTransaction result = std::move(computed->result);
  result.id = written.i64(0, "transaction_id");
  result.key = plan.key;
  result.kind = plan.transaction_kind;
  result.metadata_json = plan.metadata_json;
  result.reverses_id = plan.reverses_id;
  result.hold_id = plan.hold_id;
  result.reversed_minor = plan.reversed_minor;
  result.created_at = written.text(0, "created_at");
  for (Entry& entry : result.entries) {
    entry.transaction_id = result.id;
    entry.created_at = result.created_at;
  }
  if (span.active()) {
    span.set("payq.ledger.transaction_id", result.id);
    if (plan.hold_id) span.set("payq.ledger.hold_id", *plan.hold_id);
    if (!result.entries.empty()) span.set("payq.ledger.currency", result.entries.front().currency);
  }
  return result;
}

}  // namespace ledger_detail

using namespace ledger_detail;

LedgerTransaction Ledger::post(const PostRequest& request) {
  key_validate(request.key);
  PostingPlan plan;
  plan.key = request.key;
  plan.op_kind = "post";
  plan.transaction_kind = posting_kind(request.kind, "post");
  plan.metadata_json = metadata_canonical(request.metadata_json);
  plan.legs = request.legs;
  std::string canonical = "post|" + plan.transaction_kind + "|" + plan.metadata_json;
  for (const Leg& leg : request.legs) {
    canonical += "|" + std::to_string(leg.account_id) + ":" + std::to_string(leg.amount_minor);
  }
  plan.request_hash = request_hash(canonical);
  return posting_execute(executor_, plan);
}

LedgerTransaction Ledger::transfer(const TransferRequest& request) {
  key_validate(request.key);
  id_validate(request.source_id, "source account");
  id_validate(request.target_id, "target account");
  if (request.source_id == request.target_id) throw InvalidArgument("source and target are the same account");
  if (request.amount_minor <= 0) throw InvalidAmount("a transfer amount must be positive");

  std::int64_t fee_minor = 0;
  std::string fee_canonical = "none";
  if (request.fee) {
    fee_validate(*request.fee);
    fee_minor = fee_compute(request.amount_minor, *request.fee);
    fee_canonical = std::to_string(request.fee->rate_bps) + "," + std::to_string(request.fee->fixed_minor) + "," +
                    (request.fee->min_minor ? std::to_string(*request.fee->min_minor) : "-") + "," +
                    (request.fee->max_minor ? std::to_string(*request.fee->max_minor) : "-") + "," +
                    rounding_name(request.fee->rounding);
  }
  if (request.fee && !request.fee_account_id) throw InvalidArgument("a fee needs a fee account");
  if (request.fee_account_id) {
    id_validate(*request.fee_account_id, "fee account");
    if (*request.fee_account_id == request.source_id || *request.fee_account_id == request.target_id) {
      throw InvalidArgument("the fee account must differ from source and target");
    }
  }

  PostingPlan plan;
  plan.key = request.key;
  plan.op_kind = "transfer";
  plan.transaction_kind = posting_kind(request.kind, "transfer");
  plan.metadata_json = metadata_canonical(request.metadata_json);
  plan.single_currency = true;
  const bool source_pays = request.fee_payer == FeePayer::source;
  const std::int64_t debit_minor = source_pays ? amount_add(request.amount_minor, fee_minor) : request.amount_minor;
  const std::int64_t credit_minor = source_pays ? request.amount_minor : amount_sub(request.amount_minor, fee_minor);
  if (credit_minor <= 0) throw InvalidAmount("the fee " + std::to_string(fee_minor) + " leaves nothing to transfer");
  plan.legs.push_back({request.source_id, -debit_minor});
  plan.legs.push_back({request.target_id, credit_minor});
  if (fee_minor > 0) plan.legs.push_back({*request.fee_account_id, fee_minor});
  plan.limit_account_id = request.source_id;
  plan.limit_amount_minor = debit_minor;
  plan.request_hash = request_hash(
      "transfer|" + std::to_string(request.source_id) + "|" + std::to_string(request.target_id) + "|" +
      std::to_string(request.amount_minor) + "|" + fee_canonical + "|" +
      (request.fee_account_id ? std::to_string(*request.fee_account_id) : "-") + "|" + (source_pays ? "s" : "t") +
      "|" + plan.transaction_kind + "|" + plan.metadata_json);
  return posting_execute(executor_, plan);
}

LedgerTransaction Ledger::capture(const CaptureRequest& request) {
  key_validate(request.key);
  id_validate(request.hold_id, "hold");
  id_validate(request.target_id, "target account");
  if (request.amount_minor && *request.amount_minor <= 0) throw InvalidAmount("a capture amount must be positive");
  const std::string metadata = metadata_canonical(request.metadata_json);
  const std::string kind = posting_kind(request.kind, "capture");
  const std::string hash = request_hash(
      "capture|" + std::to_string(request.hold_id) + "|" + std::to_string(request.target_id) + "|" +
      (request.amount_minor ? std::to_string(*request.amount_minor) : "all") + "|" + kind + "|" + metadata);
  if (operation_recorded(executor_, request.key, hash)) return transaction_replay(executor_, request.key);

  Rows locked = executor_.exec(ledger_sql::hold_lock, {std::to_string(request.hold_id)});
  if (locked.empty()) throw InvalidArgument("no hold with id " + std::to_string(request.hold_id));
  const Hold hold = hold_from(locked, 0);
  if (hold.status != HoldStatus::active) {
    throw InvalidState("hold " + std::to_string(hold.id) + " is " + hold_status_name(hold.status) +
                       "; only an active hold can be captured");
  }
  hold_owner_check(executor_, hold, request.by_task_id, "captured");
  // A hold past its expiry that maintenance has not expired yet is expired,
  // except to the task that owns it: expiry waits for that task's outcome.
  if (locked.boolean(0, "expired") && !hold_owned_by(hold, request.by_task_id)) {
    throw InvalidState("hold " + std::to_string(hold.id) + " has expired");
  }
  const std::int64_t amount = request.amount_minor.value_or(hold.amount_minor);
  if (amount > hold.amount_minor) {
    throw InvalidAmount("capture of " + std::to_string(amount) + " exceeds hold " + std::to_string(hold.id) + " of " +
                        std::to_string(hold.amount_minor));
  }
  if (request.target_id == hold.account_id) throw InvalidArgument("a hold cannot be captured into its own account");

  PostingPlan plan;
  plan.key = request.key;
  plan.op_kind = "capture";
  plan.transaction_kind = kind;
  plan.metadata_json = metadata;
  plan.request_hash = hash;
  plan.single_currency = true;
  plan.legs = {{hold.account_id, -amount}, {request.target_id, amount}};
  plan.hold_id = hold.id;
  plan.captured_minor = amount;
  plan.held_release_account_id = hold.account_id;
  plan.held_release_minor = hold.amount_minor;
  return posting_execute(executor_, plan);
}

namespace {

struct ReversalSide {
  std::vector<std::int64_t> account_ids;
  std::vector<std::int64_t> remaining_minor;
  std::int64_t total_minor = 0;
};

}  // namespace

LedgerTransaction Ledger::reverse(const ReverseRequest& request) {
  key_validate(request.key);
  id_validate(request.transaction_id, "transaction");
  if (request.amount_minor && *request.amount_minor <= 0) throw InvalidAmount("a reversal amount must be positive");
  const std::string metadata = metadata_canonical(request.metadata_json);
  const std::string kind = posting_kind(request.kind, "reversal");
  const std::string hash = request_hash(
      "reverse|" + std::to_string(request.transaction_id) + "|" +
      (request.amount_minor ? std::to_string(*request.amount_minor) : "all") + "|" + kind + "|" + metadata);
  if (operation_recorded(executor_, request.key, hash)) return transaction_replay(executor_, request.key);

  Rows original = executor_.exec(ledger_sql::reversal_lock, {std::to_string(request.transaction_id)});
  if (original.empty()) throw InvalidArgument("no transaction with id " + std::to_string(request.transaction_id));
  if (!original.is_null(0, "reverses_id")) throw InvalidState("a reversal cannot itself be reversed");

  // What each account may still get back (debit side) or give back (credit side).
  Rows remaining = executor_.exec(ledger_sql::reversal_remaining, {std::to_string(request.transaction_id)});
  ReversalSide debited, credited;
  for (std::size_t i = 0; i < remaining.size(); ++i) {
    const std::int64_t account = remaining.i64(i, "account_id");
    const std::int64_t original_net = remaining.i64(i, "original_net");
    const std::int64_t returned_net = remaining.i64(i, "returned_net");
    const std::int64_t left = original_net < 0 ? amount_sub(-original_net, returned_net)
                                               : amount_add(original_net, returned_net);
    if (original_net == 0 || left <= 0) continue;
    ReversalSide& side = original_net < 0 ? debited : credited;
    side.account_ids.push_back(account);
    side.remaining_minor.push_back(left);
    side.total_minor = amount_add(side.total_minor, left);
  }
  if (credited.total_minor == 0) {
    throw InvalidState("transaction " + std::to_string(request.transaction_id) + " is already fully reversed");
  }
  const std::int64_t amount = request.amount_minor.value_or(credited.total_minor);
  if (amount > credited.total_minor) {
    throw InvalidAmount("reversal of " + std::to_string(amount) + " exceeds the " +
                        std::to_string(credited.total_minor) + " that remains reversible");
  }

  PostingPlan plan;
  plan.key = request.key;
  plan.op_kind = "reversal";
  plan.transaction_kind = kind;
  plan.metadata_json = metadata;
  plan.request_hash = hash;
  plan.reverses_id = request.transaction_id;
  plan.reversed_minor = amount;
  if (amount == credited.total_minor) {
    // Everything that remains, exactly, leg by leg.
    for (std::size_t i = 0; i < credited.account_ids.size(); ++i) {
      plan.legs.push_back({credited.account_ids[i], -credited.remaining_minor[i]});
    }
    for (std::size_t i = 0; i < debited.account_ids.size(); ++i) {
      plan.legs.push_back({debited.account_ids[i], debited.remaining_minor[i]});
    }
  } else {
    // A part, spread over both sides in proportion to what remains
    // ("largest remainder" rounding, see amount_split). Partial reversal is
    // single-currency by construction.
    plan.single_currency = true;
    const auto taken = amount_split(amount, credited.remaining_minor);
    const auto given = amount_split(amount, debited.remaining_minor);
    for (std::size_t i = 0; i < taken.size(); ++i) {
      if (taken[i] > 0) plan.legs.push_back({credited.account_ids[i], -taken[i]});
    }
    for (std::size_t i = 0; i < given.size(); ++i) {
      if (given[i] > 0) plan.legs.push_back({debited.account_ids[i], given[i]});
    }
  }
  return posting_execute(executor_, plan);
}

}  // namespace payq
