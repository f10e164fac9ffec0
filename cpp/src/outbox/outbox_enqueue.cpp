// Enqueue: tasks written in the caller's transaction.
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "outbox/outbox_encryption.hpp"
#include "outbox/outbox_internal.hpp"
#include "outbox/outbox_statements.hpp"
#include "payq/currency.hpp"
#include "payq/error.hpp"

namespace payq {

using namespace outbox_detail;

namespace {

// Every check of a spec, whichever path writes it. With `item`, the spec's
// element of the statement's JSON array is built too (`n` is its index),
// parsing its JSON once; without, the JSON is only checked (COPY sends it
// as it came, and jsonb normalises it the same way).
void spec_check(const TaskSpec& spec, std::size_t n, nlohmann::json* item) {
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

  spec_encryption_validate(spec);
  if (spec.payload_json.size() > task_payload_bytes_max) {
    throw InvalidArgument("task payload is " + std::to_string(spec.payload_json.size()) + " bytes; at most " +
                          std::to_string(task_payload_bytes_max) + " are allowed");
  }
  std::optional<nlohmann::json> payload;
  if (item == nullptr) {
    detail::json_input_check(spec.payload_json, "task payload");
  } else {
    payload = detail::json_input_parse(spec.payload_json, "task payload");
  }
  if (spec.trace_context) trace_context_validate(*spec.trace_context);
  std::optional<nlohmann::json> followup;
  if (s.followup_json) {
    followup = detail::json_input_parse(*s.followup_json, "follow-up task");
    if (!followup->is_object() || !followup->contains("kind") || !(*followup)["kind"].is_string()) {
      throw InvalidArgument("a follow-up task is a JSON object with at least a string \"kind\"");
    }
  }
  if (item == nullptr) return;
  nlohmann::json& j = *item;
  j = {{"n", n},
       {"queue", spec.queue},
       {"kind", spec.kind},
       {"payload", *payload},
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
  put("followup", followup);
  if (spec.trace_context) {
    j["trace_context"] = {{"traceparent", spec.trace_context->traceparent}};
    if (!spec.trace_context->tracestate.empty()) j["trace_context"]["tracestate"] = spec.trace_context->tracestate;
  }
}

// A bad spec of a batch is named by its index (from 0): the whole batch
// fails before anything is sent. The error keeps its type.
void spec_check_at(const TaskSpec& spec, std::size_t i, std::size_t count, nlohmann::json* item) {
  if (count == 1) return spec_check(spec, i, item);
  const std::string at = "task " + std::to_string(i) + " of the batch: ";
  try {
    spec_check(spec, i, item);
  } catch (const UnknownQueue& e) {
    throw UnknownQueue(at + e.what());
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(at + e.what());
  } catch (const InvalidAmount& e) {
    throw InvalidAmount(at + e.what());
  } catch (const UnknownCurrency& e) {
    throw UnknownCurrency(at + e.what());
  }
}

}  // namespace

EnqueueResult Outbox::enqueue(const TaskSpec& spec) { return enqueue_batch({spec}).front(); }

namespace {

// A batch after its own duplicates are folded: a key repeated within the
// batch names the task of its first occurrence, and must name the same
// request there.
struct BatchPlan {
  std::vector<nlohmann::json> items;  // per spec
  std::vector<std::string> hashes;    // per keyed spec: its request's hash
  std::vector<std::optional<std::size_t>> same_as;
  bool unique_keyed = false;
};

// `by_copy`: the statement's items are built only for the specs whose
// request is hashed (keyed ones); COPY sends the specs themselves.
BatchPlan batch_plan(const std::vector<TaskSpec>& specs, bool by_copy) {
  BatchPlan plan;
  plan.items.resize(specs.size());
  plan.hashes.resize(specs.size());
  plan.same_as.resize(specs.size());
  std::map<std::string, std::size_t> first_by_unique_key;
  std::map<std::pair<std::string, std::string>, std::size_t> first_by_idempotency_key;
  auto fold = [&](auto& firsts, const auto& key, std::size_t i, const char* what) {
    auto [found, inserted] = firsts.emplace(key, i);
    if (inserted || plan.same_as[i]) return;
    if (plan.hashes[found->second] != plan.hashes[i]) {
      throw IdempotencyConflict(std::string(what) + " appears twice in one batch with different requests; "
                                "nothing was written");
    }
    plan.same_as[i] = found->second;
  };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const TaskSpec& spec = specs[i];
    const bool idempotency_keyed = task_idempotency_keyed(spec);
    const bool item_needed = !by_copy || spec.unique_key || idempotency_keyed;
    spec_check_at(spec, i, specs.size(), item_needed ? &plan.items[i] : nullptr);
    if (!spec.unique_key && !idempotency_keyed) continue;
    plan.hashes[i] = task_request_hash(plan.items[i]);
    if (spec.unique_key) {
      plan.unique_keyed = true;
      plan.items[i]["request_hash"] = plan.hashes[i];
      fold(first_by_unique_key, *spec.unique_key, i, ("unique key '" + *spec.unique_key + "'").c_str());
    }
    if (idempotency_keyed) {
      fold(first_by_idempotency_key, std::make_pair(spec.kind, *spec.idempotency_key), i,
           ("idempotency key '" + *spec.idempotency_key + "' of kind '" + spec.kind + "'").c_str());
    }
  }
  return plan;
}

// One try at writing the batch: nullopt (with nothing written) when a
// concurrent transaction took an idempotency key of it first; the next try
// finds that key taken.
std::optional<std::vector<EnqueueResult>> batch_write(Executor& executor, const std::vector<TaskSpec>& specs,
                                                      const BatchPlan& plan, bool by_copy) {
  const std::size_t n = specs.size();
  std::vector<EnqueueResult> results(n);
  std::vector<bool> is_new(n, false);

  // Keys taken before: the same request is a replay, another a conflict.
  std::vector<std::size_t> idempotency_keyed;
  for (std::size_t i = 0; i < n; ++i) {
    if (!plan.same_as[i] && task_idempotency_keyed(specs[i])) idempotency_keyed.push_back(i);
  }
  std::vector<bool> replayed(n, false);
  for (const auto& [i, record] : idempotency_keys_taken(executor, specs, idempotency_keyed)) {
    if (record.request_hash && *record.request_hash != plan.hashes[i]) {
      key_conflict("idempotency key '" + *specs[i].idempotency_key + "' of kind '" + specs[i].kind + "'",
                   record.task_id);
    }
    results[i] = {record.task_id, false};
    replayed[i] = true;
  }
  std::vector<std::size_t> unique_settling;
  for (std::size_t i = 0; i < n; ++i) {
    if (!plan.same_as[i] && !replayed[i] && specs[i].unique_key && settlement_present(specs[i].settlement)) {
      unique_settling.push_back(i);
    }
  }
  std::set<std::size_t> unique_taken;
  for (const auto& [i, record] : unique_keys_taken(executor, specs, unique_settling)) {
    if (record.request_hash && *record.request_hash != plan.hashes[i]) {
      key_conflict("unique key '" + *specs[i].unique_key + "'", record.task_id);
    }
    unique_taken.insert(i);
  }
  std::vector<std::size_t> to_write;
  bool idempotency_new = false;
  for (std::size_t i = 0; i < n; ++i) {
    if (plan.same_as[i] || replayed[i]) continue;
    is_new[i] = !unique_taken.count(i);
    idempotency_new = idempotency_new || (is_new[i] && task_idempotency_keyed(specs[i]));
    to_write.push_back(i);
  }
  settlements_check(executor, specs, is_new);

  // A key taken by a concurrent transaction is found only by the writes
  // themselves, after other tasks of the batch are written: a savepoint
  // takes them back.
  std::optional<Savepoint> savepoint;
  if (idempotency_new || (plan.unique_keyed && to_write.size() > 1)) savepoint.emplace(executor);
  if (by_copy) {
    // No unique keys here: every task written is new.
    const std::vector<std::int64_t> ids = tasks_copy_in(executor, specs, to_write);
    for (std::size_t k = 0; k < to_write.size(); ++k) results[to_write[k]] = {ids[k], true};
  } else if (!to_write.empty()) {
    nlohmann::json batch = nlohmann::json::array();
    for (const std::size_t i : to_write) batch.push_back(plan.items[i]);
    Rows rows = executor.exec(outbox_sql::enqueue, {batch.dump()});
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const auto i = static_cast<std::size_t>(rows.i64(r, "n"));
      auto task_id = rows.i64_or_null(r, "task_id");
      std::optional<std::string> key_hash = rows.at(r, "key_request_hash");
      if (!task_id) {
        // The key was taken by a transaction that committed after this
        // statement's snapshot: read it again.
        Rows again = executor.exec(outbox_sql::task_key_get, {*specs[i].unique_key});
        if (again.empty()) throw DatabaseError("unique key '" + *specs[i].unique_key + "' vanished during enqueue");
        task_id = again.i64(0, "task_id");
        key_hash = again.at(0, "request_hash");
      }
      const bool created = rows.boolean(r, "created");
      if (!created && key_hash && *key_hash != plan.hashes[i]) {
        key_conflict("unique key '" + *specs[i].unique_key + "'", *task_id);
      }
      results[i] = {*task_id, created};
    }
  }
  if (idempotency_new && !idempotency_keys_put(executor, specs, plan.hashes, results)) return std::nullopt;
  if (savepoint) savepoint->release();
  for (std::size_t i = 0; i < n; ++i) {
    if (plan.same_as[i]) results[i] = {results[*plan.same_as[i]].task_id, false};
  }
  holds_own(executor, specs, results);
  return results;
}

// Rounds of batch_write lost to concurrent writers of the same keys.
constexpr int enqueue_round_max = 3;

}  // namespace

std::vector<EnqueueResult> Outbox::enqueue_batch(const std::vector<TaskSpec>& specs) {
  if (specs.empty()) return {};
  if (specs.size() > task_batch_count_max) {
    throw InvalidArgument("a batch holds at most " + std::to_string(task_batch_count_max) + " tasks");
  }
  // Everything is checked before anything is sent.
  // Encrypted payloads need their task ids before they are written, which
  // only the statement path takes.
  const bool by_copy = !specs_encrypted(specs) && enqueue_by_copy(executor_, specs);
  BatchPlan plan = batch_plan(specs, by_copy);
  // Sealed after planning: the request hashes are of the clear payloads.
  payloads_seal(executor_, specs, plan.items);
  for (int round = 1;; ++round) {
    if (auto results = batch_write(executor_, specs, plan, by_copy)) return *results;
    if (round == enqueue_round_max) {
      throw TransientError("the idempotency keys of this batch kept being taken by concurrent transactions");
    }
  }
}

}  // namespace payq
