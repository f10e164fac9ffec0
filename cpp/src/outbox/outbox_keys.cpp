// Keys that name one request: a task's unique key, and the idempotency key
// an application chose for a task that settles money. The same request
// under a taken key is a replay that returns the task; a different request
// is IdempotencyConflict. See docs/outbox.md, "Keys".
#include <nlohmann/json.hpp>

#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/error.hpp"

namespace payq::outbox_detail {

std::string task_request_hash(const nlohmann::json& spec_json) {
  nlohmann::json identity = nlohmann::json::object();
  for (const char* field : {"kind", "queue", "payload", "attempt_max", "amount_minor", "currency", "settle_hold_id",
                            "settle_capture_account_id", "settle_reverse_transaction_id", "followup"}) {
    if (spec_json.contains(field)) identity[field] = spec_json[field];
  }
  return detail::request_hash(identity.dump());
}

bool task_idempotency_keyed(const TaskSpec& spec) {
  return spec.idempotency_key.has_value() && settlement_present(spec.settlement);
}

void key_conflict(const std::string& what, std::int64_t task_id) {
  throw IdempotencyConflict(what + " already names task " + std::to_string(task_id) +
                            ", enqueued with a different request (kind, queue, payload, amount, settlement or "
                            "attempt_max differ); nothing was written");
}

std::map<std::size_t, KeyRecord> unique_keys_taken(Executor& executor, const std::vector<TaskSpec>& specs,
                                                   const std::vector<std::size_t>& which) {
  std::map<std::size_t, KeyRecord> taken;
  if (which.empty()) return taken;
  std::vector<std::string> keys;
  for (const std::size_t i : which) keys.push_back(*specs[i].unique_key);
  Rows rows = executor.exec(outbox_sql::task_keys_get, {array_text_quoted(keys)});
  for (const std::size_t i : which) {
    for (std::size_t r = 0; r < rows.size(); ++r) {
      if (rows.text(r, "key") == *specs[i].unique_key) {
        taken[i] = {rows.i64(r, "task_id"), rows.at(r, "request_hash")};
      }
    }
  }
  return taken;
}

std::map<std::size_t, KeyRecord> idempotency_keys_taken(Executor& executor, const std::vector<TaskSpec>& specs,
                                                        const std::vector<std::size_t>& which) {
  std::map<std::size_t, KeyRecord> taken;
  if (which.empty()) return taken;
  std::vector<std::string> kinds, keys;
  for (const std::size_t i : which) {
    kinds.push_back(specs[i].kind);
    keys.push_back(*specs[i].idempotency_key);
  }
  Rows rows = executor.exec(outbox_sql::task_idempotency_get, {array_text_quoted(kinds), array_text_quoted(keys)});
  for (const std::size_t i : which) {
    for (std::size_t r = 0; r < rows.size(); ++r) {
      if (rows.text(r, "kind") == specs[i].kind && rows.text(r, "key") == *specs[i].idempotency_key) {
        taken[i] = {rows.i64(r, "task_id"), rows.at(r, "request_hash")};
      }
    }
  }
  return taken;
}

bool idempotency_keys_put(Executor& executor, const std::vector<TaskSpec>& specs,
                          const std::vector<std::string>& hashes, const std::vector<EnqueueResult>& results) {
  std::vector<std::string> kinds, keys, request_hashes;
  std::vector<std::int64_t> task_ids;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (!results[i].created || !task_idempotency_keyed(specs[i])) continue;
    kinds.push_back(specs[i].kind);
    keys.push_back(*specs[i].idempotency_key);
    task_ids.push_back(results[i].task_id);
    request_hashes.push_back(hashes[i]);
  }
  if (task_ids.empty()) return true;
  Rows put = executor.exec(outbox_sql::task_idempotency_put,
                           {array_text_quoted(kinds), array_text_quoted(keys), array_text_i64(task_ids),
                            array_text_quoted(request_hashes)});
  return put.size() == task_ids.size();
}

}  // namespace payq::outbox_detail
