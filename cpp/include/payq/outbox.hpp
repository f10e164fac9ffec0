// The outbox queue: tasks enqueued inside the caller's transaction, claimed
// by workers under a lease, completed with one of four outcomes, and settled
// against the ledger in the same transaction as the completion.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "payq/backoff.hpp"
#include "payq/db.hpp"
#include "payq/tracing.hpp"
#include "payq/vocabulary.hpp"

namespace payq {

class Keyring;  // keyring.hpp

// Bounds, named once.
inline constexpr std::size_t task_payload_bytes_max = 256 * 1024;
inline constexpr std::size_t task_batch_count_max = 10'000;
// From this many tasks on, enqueue_batch writes a batch with COPY where the
// executor can (Executor::copy_supported) and no task has a unique key;
// smaller batches cost less as one statement (docs/outbox.md, "Enqueue").
inline constexpr std::size_t task_batch_copy_count_min = 32;
inline constexpr std::int64_t task_delay_ms_max = 366LL * 24 * 3600 * 1000;
inline constexpr int task_attempt_max_limit = 1000;
inline constexpr std::int64_t task_timeout_ms_max = 24LL * 3600 * 1000;
inline constexpr std::size_t claim_batch_count_max = 1000;
// The longest rate or amount window of a queue (starts are kept this long).
inline constexpr std::int64_t queue_window_ms_max = 366LL * 24 * 3600 * 1000;
// Successes recorded by one Outbox::complete_success_batch call.
inline constexpr std::size_t complete_batch_count_max = claim_batch_count_max;

// TaskState, task_state_name and task_state_parse: see vocabulary.hpp.

// What a task does when it finally fails or succeeds. All optional.
struct Settlement {
  std::optional<std::int64_t> hold_id;                 // captured on success, released on final failure
  std::optional<std::int64_t> capture_account_id;      // where the hold is captured to
  std::optional<std::int64_t> reverse_transaction_id;  // reversed on final failure
  std::optional<std::string> followup_json;  // {"kind","payload","queue"} enqueued on final failure
};

struct TaskSpec {
  std::string kind;
  std::string payload_json = "{}";
  std::string queue = "default";
  int priority = 0;                       // higher runs first
  std::int64_t delay_ms = 0;              // run_at = now + delay
  int attempt_max = 10;
  std::int64_t timeout_ms = 60'000;       // the lease of one attempt
  std::optional<std::string> unique_key;  // a duplicate returns the existing task
  std::optional<std::string> partition_key;
  std::optional<std::string> idempotency_key;  // default "task:<id>"
  std::optional<std::int64_t> amount_minor;    // for amount-aware queue limits
  std::optional<std::string> currency;
  bool held = false;  // claimable only after an explicit release
  Settlement settlement;
  // Store the payload encrypted under the keyring's current key, bound to
  // the task's id and kind (encryption.hpp); `keyring` is then required
  // (KeyMissing before anything is written), and is refused without it.
  bool encrypt = false;
  std::shared_ptr<const Keyring> keyring;
  // The trace the task continues (the enqueuer's span); not part of the
  // request a key names. InvalidArgument if malformed (tracing.hpp).
  std::optional<TraceContext> trace_context;
};

struct EnqueueResult {
  std::int64_t task_id = 0;
  bool created = false;  // false: the unique key already named this task
};

struct Task {
  std::int64_t id = 0;
  std::string queue;
  std::string kind;
  std::string payload_json;
  TaskState state = TaskState::pending;
  int priority = 0;
  int attempt = 0;
  int attempt_max = 0;
  std::int64_t timeout_ms = 0;
  std::optional<std::string> unique_key;
  std::optional<std::string> partition_key;
  std::string idempotency_key;
  std::optional<std::int64_t> amount_minor;
  std::optional<std::string> currency;
  Settlement settlement;
  std::optional<std::int64_t> lease_token;
  std::optional<std::string> lease_until;
  std::optional<std::string> worker_id;
  std::optional<std::string> result_json;
  std::optional<std::string> error;
  std::string run_at;
  std::string created_at;
  std::optional<std::string> finished_at;
  std::optional<TraceContext> trace_context;  // as enqueued
};

struct TaskAttempt {
  std::int64_t task_id = 0;
  int attempt = 0;
  std::int64_t lease_token = 0;
  std::string worker_id;
  std::string outcome;
  std::optional<std::string> error;
  std::int64_t duration_ms = 0;
  std::string started_at;
  std::string finished_at;
  std::optional<std::string> traceback;  // the handler's stack trace, when it raised
};

// A stack trace is kept to its last this many bytes: the innermost frames,
// where the fault is.
inline constexpr std::size_t traceback_bytes_max = 8 * 1024;

// The result of one attempt, as the handler reports it (OutcomeKind: see
// vocabulary.hpp).

struct Outcome {
  OutcomeKind kind = OutcomeKind::success;
  std::string result_json = "null";
  std::string error;
  std::optional<std::int64_t> retry_after_ms;  // overrides the backoff for retry/unknown
  std::string traceback;  // where a handler raised (its last traceback_bytes_max bytes are stored)
  // With `unknown` only: the task goes to needs_review now, whatever
  // attempts remain (a task whose encrypted payload its worker cannot read
  // must never run with garbage, nor burn its attempts).
  bool needs_review = false;
};

struct Completion {
  TaskState state = TaskState::pending;  // the task's state afterwards
  bool alerted = false;                  // an alert was raised (last attempt reached or exhausted)
  std::optional<std::int64_t> next_run_in_ms;
};

struct CompleteRequest {
  std::int64_t task_id = 0;
  std::int64_t lease_token = 0;
  int attempt = 0;  // the claimed task's attempt (fixed for its lease); 0: read it
  Outcome outcome;
  std::string worker_id;
  std::int64_t duration_ms = 0;
  BackoffPolicy backoff;  // for retry and unknown without retry_after_ms
};

// One success for Outbox::complete_success_batch.
struct BatchSuccess {
  std::int64_t task_id = 0;
  std::int64_t lease_token = 0;
  std::string result_json = "null";
  std::int64_t duration_ms = 0;
};

struct QueueConfig {
  std::string name;
  std::optional<int> concurrency_max;
  std::optional<int> rate_count_max;
  std::optional<std::int64_t> rate_window_ms;
  std::optional<std::int64_t> amount_max_minor;
  std::optional<std::string> amount_currency;
  std::optional<std::int64_t> amount_window_ms;
  int weight = 1;
};

// Who takes an operator action on a queue, and why. With an actor the action
// is recorded in the queue action log; without one (a worker's own
// back-pressure pause) it is not.
struct QueueActionBy {
  std::string actor;
  std::string note;
};

// One entry of the queue action log.
struct QueueAction {
  std::int64_t id = 0;
  std::string queue;
  std::string action;  // pause, resume, pause_for, configure
  std::string actor;
  std::string note;
  std::string detail_json;  // what was set: {"pause_ms": ...} or the limits
  std::string created_at;
};

// A recurring task: fired once per slot of its schedule, in its time zone,
// however many workers run.
struct CronEntry {
  std::string name;
  std::string schedule;  // 5-field cron syntax (see cron.hpp)
  std::string time_zone = "UTC";
  std::string queue = "default";
  std::string kind;
  std::string payload_json = "{}";
};

// An operator's (or a callback's) recorded action on a task.
struct TaskAction {
  std::int64_t task_id = 0;
  std::string action;  // release, retry, cancel, resolve_applied, callback_applied, ...
  std::string actor;
  std::string note;
  std::string created_at;
};

struct QueueStats {
  std::string queue;
  std::string state;
  std::int64_t count = 0;
};

// One queue as an operator sees it: its settings and what waits in it.
struct QueueOverview {
  std::string name;
  bool paused = false;                      // by an operator
  std::optional<std::string> paused_until;  // back-pressure still in force (UTC, ISO 8601)
  std::optional<int> concurrency_max;
  std::optional<int> rate_count_max;
  std::optional<std::int64_t> rate_window_ms;
  std::optional<std::int64_t> amount_max_minor;
  std::optional<std::string> amount_currency;
  std::optional<std::int64_t> amount_window_ms;
  int weight = 1;
  std::int64_t pending = 0;   // waiting, including those scheduled for later
  std::int64_t runnable = 0;  // pending and due now
  std::int64_t running = 0;
  std::int64_t held = 0;
  std::int64_t dead = 0;
  std::int64_t needs_review = 0;
  // How long the oldest due task has waited: the queue's lag.
  std::optional<std::int64_t> oldest_runnable_age_ms;
  // Claims within the last minute (recorded for queues with rate or amount limits only).
  std::int64_t started_last_minute = 0;
};

// Which tasks Outbox::tasks_list returns: every set field narrows the list.
struct TaskFilter {
  std::optional<std::string> state;
  std::optional<std::string> queue;
  std::optional<std::string> kind;
  std::optional<std::string> key;  // unique key or idempotency key, exact
  // Only tasks created at least this long ago (stuck work).
  std::optional<std::int64_t> created_before_ms_ago;
  std::int64_t after_id = 0;  // paging: tasks with a larger id
  std::int64_t limit = 100;   // 1..1000
};

// An operator's resolution of a needs_review task.
struct ResolveRequest {
  std::int64_t task_id = 0;
  bool applied = false;  // the side effect happened (success side) or not (failure side)
  std::string actor;
  std::string note;
  // Only with `applied`, for a task whose settlement could not run as
  // enqueued: capture its hold into this account instead (a suspense
  // account, say) ...
  std::optional<std::int64_t> capture_account_id;
  // ... or release its hold, because the operator has recorded the money's
  // movement in the ledger by hand; the note (required) says how.
  bool hold_release_manual = false;
};

// A task's place in a queue's claim order (priority DESC, run_at, id).
struct ClaimKey {
  int priority = 0;
  std::string run_at;  // as Task::run_at: exact to the microsecond
  std::int64_t id = 0;
};

struct ClaimRequest {
  std::string queue;
  std::string worker_id;
  std::size_t count_max = 10;
};

// How long a claimer may claim from its cursor before it scans from the
// front again: the bound on how late a task that sorts before the cursor
// (higher priority, or an earlier run_at committed late) can start.
inline constexpr std::chrono::milliseconds claim_full_scan_interval_default{250};

// One claimer's cursor over one plain queue (a claiming thread keeps one per
// queue). A pending task's index entry stays until vacuum, and an old
// snapshot (a long REPEATABLE READ transaction, a replica's feedback) keeps
// vacuum from removing those of tasks claimed since: a claim from the front
// steps over all of them. Claiming after the last task taken skips them; a
// scan from the front still happens when the cursor runs dry and at least
// every full_scan_interval, so no task is passed over for longer.
class ClaimCursor {
 public:
  explicit ClaimCursor(std::chrono::milliseconds full_scan_interval = claim_full_scan_interval_default);
  // Where the next claim starts: after this key, or (none) from the front.
  std::optional<ClaimKey> start(std::chrono::steady_clock::time_point now) const;
  // Moves the cursor on after claim_plain(request, after) with after = start(now).
  void record(const ClaimRequest& request, const std::optional<ClaimKey>& after, const std::vector<Task>& tasks,
              std::chrono::steady_clock::time_point now);

 private:
  std::chrono::milliseconds full_scan_interval_;
  std::optional<ClaimKey> key_;
  std::optional<std::chrono::steady_clock::time_point> full_scan_at_;
};


class Outbox {
 public:
  explicit Outbox(Executor& executor) : executor_(executor) {}

  // Inside the caller's transaction: if it rolls back, the tasks never existed.
  EnqueueResult enqueue(const TaskSpec& spec);
  std::vector<EnqueueResult> enqueue_batch(const std::vector<TaskSpec>& specs);

  // Claims up to count_max runnable tasks of one queue, honouring the
  // queue's pause, concurrency, rate, amount and partition rules. The caller
  // commits the claim before running the tasks.
  std::vector<Task> claim(const ClaimRequest& request);
  // The two halves of claim(). claim_plain is one statement (it may run as
  // its own transaction): it claims from a queue without limits or
  // partitions, returns nothing for a paused queue, and nullopt for a queue
  // that needs claim_limited, which locks the queue's row for its rules.
  // With `after` (a ClaimCursor's start) it takes only tasks of
  // after->priority that sort after that key.
  std::optional<std::vector<Task>> claim_plain(const ClaimRequest& request,
                                               const std::optional<ClaimKey>& after = std::nullopt);
  std::vector<Task> claim_limited(const ClaimRequest& request);

  // Records the attempt's outcome, moves the task on and runs its settlement,
  // all in the executor's transaction; only while the task is still running
  // under `lease_token` (else LeaseLost and nothing is written).
  Completion complete(const CompleteRequest& request);
  // Records many successes in one statement, in the executor's transaction:
  // every item whose task is still running under its lease token becomes
  // `succeeded` with its result and an attempt record. Returns the ids
  // actually completed, ascending; the others lost their lease (the caller
  // counts them as lease lost; nothing was written for them).
  //
  // Only for tasks without a settlement: nothing here captures, releases or
  // reverses. The settlement is checked in the statement itself (no hold,
  // no reversal, no follow-up), so an item whose task carries one is
  // silently not completed and not returned, exactly like a lost lease;
  // such a task must go through complete(). InvalidArgument (nothing
  // written) for more than complete_batch_count_max items, a repeated task
  // id, a negative duration or a result that is not JSON.
  std::vector<std::int64_t> complete_success_batch(const std::vector<BatchSuccess>& items,
                                                   const std::string& worker_id);
  // Hands back a claimed task that was never started (shutdown).
  void give_back(std::int64_t task_id, std::int64_t lease_token);
  // Marks expired leases as `unknown` attempts (the worker died mid-call).
  std::int64_t leases_rescue(std::int64_t count_max);

  // Operators.
  void task_release(std::int64_t task_id, const std::string& actor, const std::string& note);
  void task_retry(std::int64_t task_id, const std::string& actor, const std::string& note);
  void task_cancel(std::int64_t task_id, const std::string& actor, const std::string& note);
  // Settles a needs_review task after a human looked: applied or not.
  void task_resolve(std::int64_t task_id, bool applied, const std::string& actor, const std::string& note);
  void task_resolve(const ResolveRequest& request);

  Task task_get(std::int64_t task_id);
  std::vector<Task> tasks_list(const TaskFilter& filter);
  std::vector<Task> tasks_list(const std::optional<std::string>& state, const std::optional<std::string>& queue,
                               std::int64_t after_id, std::int64_t limit);
  std::vector<TaskAttempt> attempts(std::int64_t task_id);
  // Every recorded action on a task, oldest first.
  std::vector<TaskAction> actions(std::int64_t task_id);
  // Task counts per queue and state.
  std::vector<QueueStats> stats();
  // Every queue with its settings, depth and lag, by name.
  std::vector<QueueOverview> queues_overview();

  void queue_configure(const QueueConfig& config, const QueueActionBy& by = {});
  // Pausing or resuming a queue that has neither settings nor tasks (a typo)
  // is an UnknownQueue error (an InvalidArgument); "default" and "payq.alerts"
  // are always known.
  void queue_pause(const std::string& queue, bool paused, const QueueActionBy& by = {});
  void queue_pause_until(const std::string& queue, std::int64_t pause_ms, const QueueActionBy& by = {});
  // The queue action log, newest first: of one queue, or of all.
  std::vector<QueueAction> queue_actions(const std::optional<std::string>& queue, std::int64_t limit);

  std::int64_t prune(std::int64_t finished_before_ms_ago, std::int64_t count_max);

  // Adds or replaces a cron entry; InvalidArgument for a bad schedule or
  // time zone.
  void cron_set(const CronEntry& entry);
  void cron_remove(const std::string& name);
  std::vector<CronEntry> cron_list();
  // Enqueues the latest due slot of each entry not yet fired (missed slots
  // before it are skipped, not replayed); returns how many were enqueued.
  // Safe to run from several workers at once: each slot fires once.
  std::int64_t cron_fire();

 private:
  Executor& executor_;
};

}  // namespace payq
