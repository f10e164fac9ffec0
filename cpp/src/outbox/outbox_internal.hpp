// Shared by the outbox's source files.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "payq/outbox.hpp"
#include "common/text_internal.hpp"

namespace payq::outbox_detail {

// Bounds of task text columns, as the task table's CHECKs.
inline constexpr std::size_t kind_bytes_max = 200;
inline constexpr std::size_t queue_bytes_max = queue_name_bytes_max;
inline constexpr std::size_t key_bytes_max = 255;
// Where payq raises its alerts (kind payq.alert).
inline constexpr const char* alert_queue = "payq.alerts";

// One rule for a queue's name wherever one is given (enqueue, configure,
// pause, cron): payq::queue_name_validate (vocabulary.hpp).

Task task_from(const Rows& rows, std::size_t row);
// PostgreSQL array literals, bound as one parameter (never spliced into
// SQL): every text quoted, so JSON with quotes and backslashes survives.
std::string array_text_quoted(const std::vector<std::string>& values);
std::string array_text_i64(const std::vector<std::int64_t>& values);
using detail::text_bounded;
// Canonical JSON text of any JSON value; InvalidArgument if it is not JSON.
std::string json_canonical(const std::string& text, const char* what, std::size_t bytes_max);

// ---- keys (outbox_keys.cpp)

// What a key names: one request. Two enqueues are the same request when
// kind, queue, payload, attempt_max, amount and settlement agree (the
// canonical spec JSON of spec_json); priority, delay, timeout and the
// partition key are scheduling, not the request.
std::string task_request_hash(const nlohmann::json& spec_json);
// A task whose chosen idempotency key must name one task of its kind: one
// that settles money. The default key (task:<id>) never repeats.
bool task_idempotency_keyed(const TaskSpec& spec);
[[noreturn]] void key_conflict(const std::string& what, std::int64_t task_id);

struct KeyRecord {
  std::int64_t task_id = 0;
  std::optional<std::string> request_hash;  // none for keys taken before migration 008/009
};
// The keys of specs[i] (i in `which`) already taken, by i.
std::map<std::size_t, KeyRecord> unique_keys_taken(Executor& executor, const std::vector<TaskSpec>& specs,
                                                   const std::vector<std::size_t>& which);
std::map<std::size_t, KeyRecord> idempotency_keys_taken(Executor& executor, const std::vector<TaskSpec>& specs,
                                                        const std::vector<std::size_t>& which);
// Records the idempotency keys of the created tasks; false (the caller rolls
// back) when a concurrent transaction took one of them first.
bool idempotency_keys_put(Executor& executor, const std::vector<TaskSpec>& specs,
                          const std::vector<std::string>& hashes, const std::vector<EnqueueResult>& results);

// ---- enqueue by COPY (outbox_enqueue_copy.cpp)

// Whether enqueue_batch writes these (validated) specs with COPY: enough of
// them (task_batch_copy_count_min), an executor that can, and no unique key
// (a key's conflict is handled per row by the statement) or encrypted
// payload among them.
bool enqueue_by_copy(const Executor& executor, const std::vector<TaskSpec>& specs);

// Writes the tasks specs[i], i in `which` (validated, none with a unique
// key), as new tasks with COPY; returns their ids in the order of `which`,
// ascending.
std::vector<std::int64_t> tasks_copy_in(Executor& executor, const std::vector<TaskSpec>& specs,
                                        const std::vector<std::size_t>& which);

// ---- settlement (outbox_settle.cpp)

// How an operator's resolution settles a task instead of as enqueued.
struct SettleOverride {
  std::optional<std::int64_t> capture_account_id;  // capture the hold into this account
  bool hold_release = false;  // release the hold instead: the operator adjusted the ledger by hand
};

bool settlement_present(const Settlement& settlement);

// Runs a settled task's success side (applied) or failure side in the
// executor's transaction; a failure propagates.
void settle_task(Executor& executor, const Task& task, bool applied, const SettleOverride& how = {});

// Runs the side of a task that has just become succeeded or dead, inside a
// savepoint. If it fails, the savepoint is rolled back, the task moves to
// needs_review with the error (its attempt and result stay recorded) and
// the task as it now is returns; nullopt when it settled.
std::optional<Task> settle_completed(Executor& executor, const Task& task);

// Before new tasks are written: every hold they are to settle exists, is
// active and unexpired, has the currency of the account it is to be
// captured into, and belongs to no other live task (HoldInUse), with the
// holds locked until commit. `is_new[i]`: spec i will create a task (a
// unique key already taken makes it a replay, checked as such instead).
void settlements_check(Executor& executor, const std::vector<TaskSpec>& specs, const std::vector<bool>& is_new);

// The created tasks take ownership of the holds they settle.
void holds_own(Executor& executor, const std::vector<TaskSpec>& specs, const std::vector<EnqueueResult>& results);

}  // namespace payq::outbox_detail
