// Enqueue: tasks written in the caller's transaction.
#include <map>

#include <nlohmann/json.hpp>

#include "outbox_internal.hpp"
#include "outbox_statements.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"

namespace payq {

using namespace outbox_detail;

namespace {

void queue_name_validate(const std::string& queue) {
  text_bounded(queue, queue_bytes_max, "queue name");
  for (char c : queue) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == ':' || c == '-';
    if (!ok) throw InvalidArgument("queue name '" + queue + "' may use letters, digits and _ . : - only");
  }
}

nlohmann::json spec_json(const TaskSpec& spec, std::size_t n) {
  text_bounded(spec.kind, kind_bytes_max, "task kind");
  queue_name_validate(spec.queue);
  if (spec.delay_ms < 0) throw InvalidArgument("a task delay cannot be negative");
  if (spec.delay_ms > task_delay_ms_max) throw InvalidArgument("a task delay is at most 366 days");
  if (spec.attempt_max < 1 || spec.attempt_max > task_attempt_max_limit) {
    throw InvalidArgument("attempt_max is 1 to " + std::to_string(task_attempt_max_limit));
  }
  if (spec.timeout_ms <= 0 || spec.timeout_ms > task_timeout_ms_max) {
    throw InvalidArgument("a task timeout is 1 ms to 24 hours");
  }
  if (spec.priority < -32768 || spec.priority > 32767) throw InvalidArgument("priority is a 16-bit integer");
  if (spec.unique_key) text_bounded(*spec.unique_key, key_bytes_max, "unique key");
  if (spec.partition_key) text_bounded(*spec.partition_key, key_bytes_max, "partition key");
  if (spec.idempotency_key) text_bounded(*spec.idempotency_key, key_bytes_max, "idempotency key");
  if (spec.amount_minor.has_value() != spec.currency.has_value()) {
    throw InvalidArgument("a task amount needs its currency, and a currency its amount");
  }
  if (spec.amount_minor && *spec.amount_minor <= 0) throw InvalidAmount("a task amount must be positive");
  if (spec.currency && !currency_known(*spec.currency)) {
    throw UnknownCurrency("unknown currency '" + *spec.currency + "'");
  }
  const Settlement& s = spec.settlement;
  if (s.hold_id.has_value() != s.capture_account_id.has_value()) {
    throw InvalidArgument("a settlement hold needs the account to capture it into, and the other way round");
  }
  if (s.hold_id && *s.hold_id <= 0) throw InvalidArgument("settlement hold id must be positive");
  if (s.capture_account_id && *s.capture_account_id <= 0) throw InvalidArgument("capture account id must be positive");
  if (s.reverse_transaction_id && *s.reverse_transaction_id <= 0) {
    throw InvalidArgument("settlement transaction id must be positive");
  }

  nlohmann::json payload;
  try {
    payload = nlohmann::json::parse(spec.payload_json);
  } catch (const nlohmann::json::parse_error& e) {
    throw InvalidArgument(std::string("task payload is not valid JSON: ") + e.what());
  }
  if (spec.payload_json.size() > task_payload_bytes_max) {
    throw InvalidArgument("task payload is " + std::to_string(spec.payload_json.size()) + " bytes; at most " +
                          std::to_string(task_payload_bytes_max) + " are allowed");
  }
  nlohmann::json j = {{"n", n},
                      {"queue", spec.queue},
                      {"kind", spec.kind},
                      {"payload", payload},
                      {"held", spec.held},
                      {"priority", spec.priority},
                      {"delay_ms", spec.delay_ms},
                      {"attempt_max", spec.attempt_max},
                      {"timeout_ms", spec.timeout_ms}};
  auto put = [&](const char* name, const auto& value) {
    if (value) j[name] = *value;
  };
  put("unique_key", spec.unique_key);
  put("partition_key", spec.partition_key);
  put("idempotency_key", spec.idempotency_key);
  put("amount_minor", spec.amount_minor);
  put("currency", spec.currency);
  put("settle_hold_id", s.hold_id);
  put("settle_capture_account_id", s.capture_account_id);
  put("settle_reverse_transaction_id", s.reverse_transaction_id);
  if (s.followup_json) {
    nlohmann::json followup;
    try {
      followup = nlohmann::json::parse(*s.followup_json);
    } catch (const nlohmann::json::parse_error& e) {
      throw InvalidArgument(std::string("follow-up task is not valid JSON: ") + e.what());
    }
    if (!followup.is_object() || !followup.contains("kind") || !followup["kind"].is_string()) {
      throw InvalidArgument("a follow-up task is a JSON object with at least a string \"kind\"");
    }
    j["followup"] = followup;
  }
  return j;
}

// What a unique key names: one request. Two enqueues under one key are the
// same request when these agree; priority, delay, timeout and the partition
// key are scheduling, not the request.
std::string spec_request_hash(const nlohmann::json& j) {
  nlohmann::json identity = nlohmann::json::object();
  for (const char* field : {"kind", "queue", "payload", "attempt_max", "amount_minor", "currency", "settle_hold_id",
                            "settle_capture_account_id", "settle_reverse_transaction_id", "followup"}) {
    if (j.contains(field)) identity[field] = j[field];
  }
  return detail::request_hash(identity.dump());
}

[[noreturn]] void unique_key_conflict(const std::string& key, std::int64_t task_id) {
  throw IdempotencyConflict("unique key '" + key + "' already names task " + std::to_string(task_id) +
                            ", enqueued with a different request (kind, queue, payload, amount, settlement or "
                            "attempt_max differ); nothing was written");
}

// The tasks that unique keys already name, with their requests' hashes.
std::map<std::string, std::pair<std::int64_t, std::optional<std::string>>> keys_taken(
    Executor& executor, const std::vector<TaskSpec>& specs) {
  std::vector<std::string> keys;
  for (const TaskSpec& spec : specs) {
    if (spec.unique_key && spec.settlement.hold_id) keys.push_back(*spec.unique_key);
  }
  std::map<std::string, std::pair<std::int64_t, std::optional<std::string>>> taken;
  if (keys.empty()) return taken;
  std::string array = "{";
  for (const std::string& key : keys) {
    array += (array.size() > 1 ? ",\"" : "\"");
    for (const char c : key) {
      if (c == '"' || c == '\\') array.push_back('\\');
      array.push_back(c);
    }
    array.push_back('"');
  }
  Rows rows = executor.exec(outbox_sql::task_keys_get, {array + "}"});
  for (std::size_t r = 0; r < rows.size(); ++r) {
    taken[rows.text(r, "key")] = {rows.i64(r, "task_id"), rows.at(r, "request_hash")};
  }
  return taken;
}

}  // namespace

EnqueueResult Outbox::enqueue(const TaskSpec& spec) { return enqueue_batch({spec}).front(); }

std::vector<EnqueueResult> Outbox::enqueue_batch(const std::vector<TaskSpec>& specs) {
  if (specs.empty()) return {};
  if (specs.size() > task_batch_count_max) {
    throw InvalidArgument("a batch holds at most " + std::to_string(task_batch_count_max) + " tasks");
  }
  // Everything is checked before anything is sent. A unique key repeated
  // within the batch names the task of its first occurrence, and must name
  // the same request there.
  nlohmann::json batch = nlohmann::json::array();
  std::map<std::string, std::size_t> first_by_key;
  std::vector<std::optional<std::size_t>> same_as(specs.size());
  std::vector<std::string> hashes(specs.size());
  bool keyed = false;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    nlohmann::json j = spec_json(specs[i], i);
    if (specs[i].unique_key) {
      keyed = true;
      hashes[i] = spec_request_hash(j);
      j["request_hash"] = hashes[i];
      auto [found, inserted] = first_by_key.emplace(*specs[i].unique_key, i);
      if (!inserted) {
        if (hashes[found->second] != hashes[i]) {
          throw IdempotencyConflict("unique key '" + *specs[i].unique_key +
                                    "' appears twice in one batch with different requests; nothing was written");
        }
        same_as[i] = found->second;
        continue;
      }
    }
    batch.push_back(std::move(j));
  }

  // A task that settles a hold is checked against the ledger first, with
  // the hold locked; one whose unique key is taken is a replay instead.
  const auto taken = keys_taken(executor_, specs);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (!specs[i].unique_key || same_as[i]) continue;
    auto found = taken.find(*specs[i].unique_key);
    if (found != taken.end() && found->second.second && *found->second.second != hashes[i]) {
      unique_key_conflict(*specs[i].unique_key, found->second.first);
    }
  }
  std::vector<bool> is_new(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    is_new[i] = !same_as[i] && !(specs[i].unique_key && taken.count(*specs[i].unique_key));
  }
  settlements_check(executor_, specs, is_new);

  // In a batch, a key taken by a concurrent transaction is found only by
  // the write itself, after other tasks of the batch are written: a
  // savepoint takes them back if that key names a different request.
  std::optional<Savepoint> savepoint;
  if (keyed && batch.size() > 1) savepoint.emplace(executor_);
  Rows rows = executor_.exec(outbox_sql::enqueue, {batch.dump()});
  std::vector<EnqueueResult> results(specs.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto n = static_cast<std::size_t>(rows.i64(r, "n"));
    auto task_id = rows.i64_or_null(r, "task_id");
    std::optional<std::string> key_hash = rows.at(r, "key_request_hash");
    if (!task_id) {
      // The key was taken by a transaction that committed after this
      // statement's snapshot: read it again.
      Rows again = executor_.exec(outbox_sql::task_key_get, {*specs[n].unique_key});
      if (again.empty()) throw DatabaseError("unique key '" + *specs[n].unique_key + "' vanished during enqueue");
      task_id = again.i64(0, "task_id");
      key_hash = again.at(0, "request_hash");
    }
    const bool created = rows.boolean(r, "created");
    if (!created && key_hash && *key_hash != hashes[n]) unique_key_conflict(*specs[n].unique_key, *task_id);
    results[n] = {*task_id, created};
  }
  if (savepoint) savepoint->release();
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (same_as[i]) results[i] = {results[*same_as[i]].task_id, false};
  }
  holds_own(executor_, specs, results);
  return results;
}

}  // namespace payq
