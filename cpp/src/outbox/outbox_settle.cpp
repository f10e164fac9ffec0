// Settlement: what a task does to the ledger when it succeeds or finally
// fails, the checks that make it possible at enqueue, and what happens when
// it cannot run. See docs/outbox.md, "What settlement guarantees".
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/error.hpp"
#include "payq/ledger.hpp"

namespace payq {

namespace outbox_detail {

namespace {

constexpr std::size_t settle_error_bytes_max = 4000;

std::string ids_array(const std::set<std::int64_t>& ids) {
  std::string out = "{";
  for (const std::int64_t id : ids) out += (out.size() > 1 ? "," : "") + std::to_string(id);
  return out + "}";
}

std::string task_metadata(const Task& task, const SettleOverride& how) {
  nlohmann::json metadata{{"task_id", task.id}, {"kind", task.kind}};
  if (how.capture_account_id) metadata["capture_account_id_enqueued"] = *task.settlement.capture_account_id;
  return metadata.dump();
}

// Keys derive from the task, so a repeated settlement (an operator resolving
// twice) is a replay, not a second payment.
void settle_success(Executor& executor, const Task& task, const SettleOverride& how) {
  const Settlement& s = task.settlement;
  if (!s.hold_id) return;
  const std::string prefix = "task:" + std::to_string(task.id);
  Ledger ledger(executor);
  if (how.hold_release) {
    ReleaseRequest release{prefix + ":release", *s.hold_id, task.id};
    ledger.release(release);
    return;
  }
  CaptureRequest capture;
  capture.key = prefix + ":capture";
  capture.hold_id = *s.hold_id;
  capture.target_id = how.capture_account_id.value_or(*s.capture_account_id);
  capture.kind = "task_capture";
  capture.metadata_json = task_metadata(task, how);
  capture.by_task_id = task.id;
  ledger.capture(capture);
}

void settle_failure(Executor& executor, const Task& task) {
  const Settlement& s = task.settlement;
  const std::string prefix = "task:" + std::to_string(task.id);
  Ledger ledger(executor);
  if (s.hold_id) {
    ReleaseRequest release{prefix + ":release", *s.hold_id, task.id};
    ledger.release(release);
  }
  if (s.reverse_transaction_id) {
    ReverseRequest reverse;
    reverse.key = prefix + ":reverse";
    reverse.transaction_id = *s.reverse_transaction_id;
    reverse.kind = "task_reversal";
    reverse.metadata_json = task_metadata(task, {});
    ledger.reverse(reverse);
  }
  if (s.followup_json) {
    const auto followup = nlohmann::json::parse(*s.followup_json);
    TaskSpec spec;
    spec.kind = followup.at("kind").get<std::string>();
    spec.payload_json = followup.value("payload", nlohmann::json::object()).dump();
    spec.queue = followup.value("queue", task.queue);
    spec.unique_key = prefix + ":followup";
    // The compensation continues the failed task's trace.
    spec.trace_context = tracing::current_context();
    if (!spec.trace_context) spec.trace_context = task.trace_context;
    Outbox(executor).enqueue(spec);
  }
}

}  // namespace

bool settlement_present(const Settlement& s) {
  return s.hold_id.has_value() || s.reverse_transaction_id.has_value() || s.followup_json.has_value();
}

void settle_task(Executor& executor, const Task& task, bool applied, const SettleOverride& how) {
  // The ledger postings below are its children; a failure ends it with an
  // error status (settle_completed then sends the task to review).
  tracing::Span span("payq.settle");
  tracing::Scope traced(span);
  span.set("payq.task.id", task.id);
  span.set("payq.task.kind", task.kind);
  span.set("payq.settle.side", applied ? "success" : "failure");
  if (applied) {
    settle_success(executor, task, how);
  } else {
    settle_failure(executor, task);
  }
}

std::optional<Task> settle_completed(Executor& executor, const Task& task) {
  if (!settlement_present(task.settlement)) return std::nullopt;
  std::string error;
  {
    Savepoint savepoint(executor);
    try {
      settle_task(executor, task, task.state == TaskState::succeeded);
      savepoint.release();
      return std::nullopt;
    } catch (const TransientError&) {
      throw;  // the whole completion is run again
    } catch (const ConnectionLost&) {
      throw;  // likewise, on a fresh connection
    } catch (const Error& e) {
      error = e.what();
    }
  }  // rolled back to before the settlement
  const std::string reason = detail::text_truncated(
      "settlement_failed: " + std::string(task.state == TaskState::succeeded ? "capture" : "failure side") +
          " of task " + std::to_string(task.id) + " failed: " + error,
      settle_error_bytes_max);
  Rows changed = executor.exec(outbox_sql::task_settlement_failed, {std::to_string(task.id), reason});
  if (changed.empty()) throw std::logic_error("a task completed in this transaction vanished");
  return task_from(changed, 0);
}

void settlements_check(Executor& executor, const std::vector<TaskSpec>& specs, const std::vector<bool>& is_new) {
  std::set<std::int64_t> hold_ids, account_ids;
  std::map<std::int64_t, std::size_t> spec_by_hold;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Settlement& s = specs[i].settlement;
    if (!is_new[i] || !s.hold_id) continue;
    if (!spec_by_hold.emplace(*s.hold_id, i).second) {
      throw InvalidArgument("hold " + std::to_string(*s.hold_id) +
                            " is given to two tasks of one batch; one task settles a hold");
    }
    hold_ids.insert(*s.hold_id);
    account_ids.insert(*s.capture_account_id);
  }
  if (hold_ids.empty()) return;

  Rows rows = executor.exec(outbox_sql::settle_holds_lock, {ids_array(hold_ids), ids_array(account_ids)});
  std::map<std::int64_t, std::size_t> hold_row;
  std::map<std::int64_t, std::string> account_currency;
  std::set<std::int64_t> owner_ids;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows.text(r, "what") == "hold") {
      hold_row[rows.i64(r, "id")] = r;
      if (auto owner = rows.i64_or_null(r, "task_id")) owner_ids.insert(*owner);
    } else {
      account_currency[rows.i64(r, "id")] = rows.text(r, "currency");
    }
  }
  for (const auto& [hold_id, i] : spec_by_hold) {
    const std::string hold_text = "hold " + std::to_string(hold_id);
    auto found = hold_row.find(hold_id);
    if (found == hold_row.end()) throw InvalidArgument("no " + hold_text + " to settle");
    const std::size_t r = found->second;
    const std::string status = rows.text(r, "status");
    if (status != "active") {
      throw InvalidState(hold_text + " is " + status + "; a task can only settle an active hold");
    }
    if (rows.boolean(r, "expired")) throw InvalidState(hold_text + " has expired; a task cannot settle it");
    const std::int64_t into = *specs[i].settlement.capture_account_id;
    auto currency = account_currency.find(into);
    if (currency == account_currency.end()) {
      throw UnknownAccount("no account with id " + std::to_string(into) + " to capture " + hold_text + " into");
    }
    if (currency->second != rows.text(r, "currency")) {
      throw CurrencyMismatch(hold_text + " is in " + rows.text(r, "currency") + " but account " +
                             std::to_string(into) + " is in " + currency->second);
    }
  }
  if (owner_ids.empty()) return;

  Rows live = executor.exec(outbox_sql::settle_owners_live, {ids_array(owner_ids)});
  std::map<std::int64_t, std::size_t> live_row;
  for (std::size_t r = 0; r < live.size(); ++r) live_row[live.i64(r, "id")] = r;
  for (const auto& [hold_id, i] : spec_by_hold) {
    auto owner = rows.i64_or_null(hold_row.at(hold_id), "task_id");
    if (!owner) continue;
    auto found = live_row.find(*owner);
    if (found == live_row.end()) continue;  // its task is final: a new task may settle it
    // The owner may be this very request, committed by a racing transaction
    // after this one looked its keys up: the enqueue finds it by its key.
    const auto owner_unique_key = live.at(found->second, "unique_key");
    if (specs[i].unique_key && owner_unique_key && *owner_unique_key == *specs[i].unique_key) continue;
    if (specs[i].idempotency_key && live.text(found->second, "kind") == specs[i].kind &&
        live.text(found->second, "idempotency_key") == *specs[i].idempotency_key) {
      continue;
    }
    throw HoldInUse("hold " + std::to_string(hold_id) + " is already settled by task " + std::to_string(*owner) +
                        " (" + live.text(found->second, "state") + "); a hold is settled by one task",
                    *owner);
  }
}

void holds_own(Executor& executor, const std::vector<TaskSpec>& specs, const std::vector<EnqueueResult>& results) {
  std::string holds = "{", tasks = "{";
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (!results[i].created || !specs[i].settlement.hold_id) continue;
    const char* comma = holds.size() > 1 ? "," : "";
    holds += comma + std::to_string(*specs[i].settlement.hold_id);
    tasks += comma + std::to_string(results[i].task_id);
  }
  if (holds.size() == 1) return;
  executor.exec(outbox_sql::holds_own, {holds + "}", tasks + "}"});
}

}  // namespace outbox_detail

}  // namespace payq
