// Every SQL statement of the outbox queue, by name.
#pragma once

#include <string>

#include "payq/db.hpp"

namespace payq::outbox_sql {

#define PAYQ_TS(column) "to_char(" column " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define PAYQ_TASK_COLUMNS                                                                                      \
  "t.id, t.queue, t.kind, t.payload::text AS payload, t.state, t.priority, t.attempt, t.attempt_max, "         \
  "t.timeout_ms, t.unique_key, t.partition_key, t.idempotency_key, t.amount_minor, t.currency, "               \
  "t.settle_hold_id, t.settle_capture_account_id, t.settle_reverse_transaction_id, t.followup::text AS followup, " \
  "t.lease_token, " PAYQ_TS("t.lease_until") " AS lease_until, t.worker_id, t.result::text AS result, t.error, " \
  PAYQ_TS("t.run_at") " AS run_at, " PAYQ_TS("t.created_at") " AS created_at, " PAYQ_TS("t.finished_at") " AS finished_at, "   \
  "t.trace_context->>'traceparent' AS traceparent, t.trace_context->>'tracestate' AS tracestate"

// Batch enqueue in one round trip: every task is one element of a JSON
// array. Unique keys are taken in task_key first; a key already taken
// yields no new row (the caller reads the existing task).
inline const Statement enqueue{"payq_task_enqueue", R"sql(
WITH input AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    n integer, queue text, kind text, payload jsonb, held boolean, priority smallint, delay_ms bigint,
    attempt_max integer, timeout_ms integer, unique_key text, partition_key text, idempotency_key text,
    amount_minor bigint, currency text, settle_hold_id bigint, settle_capture_account_id bigint,
    settle_reverse_transaction_id bigint, followup jsonb, request_hash text, trace_context jsonb,
    given_id bigint)
), keyed AS (
  -- given_id: drawn by the caller already (an encrypted payload is bound to it).
  INSERT INTO @schema@.task_key (key, task_id, request_hash)
  SELECT unique_key, coalesce(given_id, nextval('@schema@.task_id_seq')), request_hash
  FROM input WHERE unique_key IS NOT NULL
  ON CONFLICT (key) DO NOTHING
  RETURNING key, task_id
), ids AS (
  SELECT input.*,
         CASE WHEN input.unique_key IS NULL THEN coalesce(input.given_id, nextval('@schema@.task_id_seq'))
              ELSE keyed.task_id END AS id
  FROM input LEFT JOIN keyed ON keyed.key = input.unique_key
), new_queue AS (
  INSERT INTO @schema@.queue (name, uses_partitions)
  SELECT queue, bool_or(partition_key IS NOT NULL) FROM input GROUP BY queue
  ON CONFLICT (name) DO NOTHING
), partitioned_queue AS (
  UPDATE @schema@.queue SET uses_partitions = true, updated_at = now()
  WHERE name IN (SELECT queue FROM input WHERE partition_key IS NOT NULL) AND NOT uses_partitions
), inserted AS (
  INSERT INTO @schema@.task (id, queue, kind, payload, state, priority, run_at, attempt_max, timeout_ms,
                             unique_key, partition_key, idempotency_key, amount_minor, currency, settle_hold_id,
                             settle_capture_account_id, settle_reverse_transaction_id, followup, trace_context)
  SELECT id, queue, kind, payload, CASE WHEN held THEN 'held' ELSE 'pending' END, priority,
         now() + delay_ms * interval '1 millisecond', attempt_max, timeout_ms, unique_key, partition_key,
         coalesce(idempotency_key, 'task:' || id), amount_minor, currency, settle_hold_id,
         settle_capture_account_id, settle_reverse_transaction_id, followup, trace_context
  FROM ids WHERE id IS NOT NULL
  RETURNING id
)
SELECT ids.n, coalesce(ids.id, k.task_id) AS task_id, ids.id IS NOT NULL AS created,
       k.request_hash AS key_request_hash
FROM ids LEFT JOIN @schema@.task_key k ON ids.id IS NULL AND k.key = ids.unique_key
ORDER BY ids.n)sql"};

// The COPY path of enqueue (outbox_enqueue_copy.cpp), in two steps. First
// the batch's queues are made known as the statement above does, and its
// ids and the transaction's time (microseconds since 1970) are drawn:
// $1 the queues, $2 whether each has a partitioned task, $3 the queues to
// mark as partitioned, $4 how many ids.
inline const Statement enqueue_copy_prepare{"payq_task_enqueue_copy_prepare", R"sql(
WITH new_queue AS (
  INSERT INTO @schema@.queue (name, uses_partitions)
  SELECT * FROM unnest($1::text[], $2::boolean[])
  ON CONFLICT (name) DO NOTHING
), partitioned_queue AS (
  UPDATE @schema@.queue SET uses_partitions = true, updated_at = now()
  WHERE name = ANY($3::text[]) AND NOT uses_partitions
)
SELECT (SELECT array_agg(id ORDER BY id)
        FROM (SELECT nextval('@schema@.task_id_seq') AS id FROM generate_series(1, $4::integer)) drawn)::text AS ids,
       (extract(epoch FROM now()) * 1000000)::bigint AS now_us)sql"};

// Then the rows, whole, with COPY: no unique key (those go through the
// statement above), the default idempotency key already filled in.
inline const CopyTarget task_copy{"payq_task_copy", "@schema@.task",
                                  "id, queue, kind, payload, state, priority, run_at, attempt_max, timeout_ms, "
                                  "partition_key, idempotency_key, amount_minor, currency, settle_hold_id, "
                                  "settle_capture_account_id, settle_reverse_transaction_id, followup, "
                                  "trace_context"};

inline const Statement task_key_get{"payq_task_key_get", R"sql(
SELECT task_id, request_hash FROM @schema@.task_key WHERE key = $1)sql"};

inline const Statement task_keys_get{"payq_task_keys_get", R"sql(
SELECT key, task_id, request_hash FROM @schema@.task_key WHERE key = ANY($1::text[]))sql"};

// The tasks that chosen idempotency keys of settling tasks name, per kind.
inline const Statement task_idempotency_get{"payq_task_idempotency_get", R"sql(
SELECT i.kind, i.key, i.task_id, i.request_hash
FROM unnest($1::text[], $2::text[]) AS x(kind, key)
JOIN @schema@.task_idempotency i ON i.kind = x.kind AND i.key = x.key)sql"};

// Records the keys of new settling tasks. A key another transaction took
// first (it waits for that one to end) yields no row: the caller rolls its
// batch back and reads the key again.
inline const Statement task_idempotency_put{"payq_task_idempotency_put", R"sql(
INSERT INTO @schema@.task_idempotency (kind, key, task_id, request_hash)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
ON CONFLICT (kind, key) DO NOTHING
RETURNING task_id)sql"};

// ---- settlement (outbox_settle.cpp)

// The holds new tasks are to settle, locked in id order (the order every
// hold operation uses), with what the checks at enqueue need; and the
// currencies of the accounts they are to be captured into.
inline const Statement settle_holds_lock{"payq_settle_holds_lock", R"sql(
WITH locked AS (
  SELECT h.id, h.status, h.task_id, h.expires_at IS NOT NULL AND h.expires_at <= now() AS expired, a.currency
  FROM @schema@.hold h JOIN @schema@.account a ON a.id = h.account_id
  WHERE h.id = ANY($1::bigint[])
  ORDER BY h.id
  FOR UPDATE OF h
)
SELECT 'hold' AS what, id, status, task_id, expired, currency FROM locked
UNION ALL
SELECT 'account', id, NULL, NULL, NULL, currency FROM @schema@.account WHERE id = ANY($2::bigint[]))sql"};

// The live tasks among the owners of locked holds: a statement of its own,
// so it sees tasks committed by whoever held the holds' locks before.
inline const Statement settle_owners_live{"payq_settle_owners_live", R"sql(
SELECT id, state, kind, unique_key, idempotency_key FROM @schema@.task
WHERE id = ANY($1::bigint[]) AND state IN ('held', 'pending', 'running', 'needs_review'))sql"};

// New tasks take ownership of the holds they settle (already locked).
inline const Statement holds_own{"payq_holds_own", R"sql(
UPDATE @schema@.hold h SET task_id = o.task_id
FROM unnest($1::bigint[], $2::bigint[]) AS o(hold_id, task_id)
WHERE h.id = o.hold_id)sql"};

// A settlement that failed: the attempt and its result stay recorded, the
// task waits for an operator, and the failure is on its action record.
inline const Statement task_settlement_failed{"payq_task_settlement_failed", R"sql(
WITH changed AS (
  UPDATE @schema@.task t
  SET state = 'needs_review', error = $2, finished_at = NULL, updated_at = now()
  WHERE t.id = $1::bigint
  RETURNING t.*
), action AS (
  INSERT INTO @schema@.task_action (task_id, action, actor, note)
  SELECT id, 'settlement_failed', 'payq', $2 FROM changed
)
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM changed t)sql"};

inline const Statement queue_lock{"payq_queue_lock", R"sql(
SELECT name, paused OR coalesce(paused_until > now(), false) AS paused, concurrency_max, rate_count_max,
       rate_window_ms, amount_max_minor, amount_currency, amount_window_ms, uses_partitions
FROM @schema@.queue WHERE name = $1 FOR UPDATE)sql"};

// Read after the queue lock is held, in a new statement: sees every claim
// committed before ours.
inline const Statement queue_usage{"payq_queue_usage", R"sql(
SELECT (SELECT count(*) FROM @schema@.task WHERE queue = $1 AND state = 'running') AS running,
       (SELECT count(*) FROM @schema@.queue_start
         WHERE queue = $1 AND $2::bigint IS NOT NULL AND started_at > now() - $2::bigint * interval '1 millisecond')
         AS rate_used,
       (SELECT coalesce(sum(amount_minor), 0) FROM @schema@.queue_start
         WHERE queue = $1 AND $3::bigint IS NOT NULL AND started_at > now() - $3::bigint * interval '1 millisecond')
         AS amount_used,
       (SELECT coalesce(array_agg(DISTINCT partition_key), '{}') FROM @schema@.task
         WHERE queue = $1 AND state = 'running' AND partition_key IS NOT NULL)::text AS partitions_running)sql"};

// Tasks of partitions already running are skipped here, so a long backlog
// of one partition cannot hide the others behind the scan bound.
inline const Statement claim_candidates{"payq_claim_candidates", R"sql(
SELECT id, partition_key, amount_minor, currency FROM @schema@.task
WHERE queue = $1 AND state = 'pending' AND run_at <= now()
  AND (partition_key IS NULL OR NOT (partition_key = ANY($3::text[])))
ORDER BY priority DESC, run_at, id
LIMIT $2::bigint
FOR UPDATE SKIP LOCKED)sql"};

// Marks the picked tasks running under fresh lease tokens.
inline const Statement claim_mark{"payq_claim_mark", R"sql(
WITH picked AS (
  UPDATE @schema@.task t
  SET state = 'running', attempt = t.attempt + 1, lease_token = nextval('@schema@.lease_token_seq'),
      lease_until = now() + t.timeout_ms * interval '1 millisecond', worker_id = $2, updated_at = now()
  -- claim_candidates locked these rows, still pending, in this transaction:
  -- no state test here, which would let the planner scan a state index.
  WHERE t.id = ANY($1::bigint[])
  RETURNING t.*
), started AS (
  INSERT INTO @schema@.queue_start (queue, task_id, amount_minor)
  SELECT queue, id, amount_minor FROM picked WHERE $3::boolean
)
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM picked t ORDER BY t.priority DESC, t.run_at, t.id)sql"};

// The claim of a queue without limits or partitions, in one statement
// (so it can run as its own transaction): the queue's row says whether it
// is paused or needs the locked path, and only otherwise are tasks taken.
// One row always comes back: the queue's flags, with the columns of a
// claimed task, or NULL ones when none was taken. A task with a partition
// key is never taken here: it may have been committed after the queue's
// row was read, and only the locked path serialises partitions.
inline const Statement claim_plain{"payq_claim_plain", R"sql(
WITH q AS (
  SELECT paused OR coalesce(paused_until > now(), false) AS paused,
         (concurrency_max IS NOT NULL OR rate_count_max IS NOT NULL OR amount_max_minor IS NOT NULL
          OR uses_partitions) AS limited
  FROM @schema@.queue WHERE name = $1
), flags AS (
  SELECT coalesce((SELECT paused FROM q), false) AS queue_paused,
         coalesce((SELECT limited FROM q), false) AS queue_limited
), candidates AS (
  SELECT id FROM @schema@.task
  WHERE queue = $1 AND state = 'pending' AND run_at <= now() AND partition_key IS NULL
    AND (SELECT NOT (queue_paused OR queue_limited) FROM flags)
  ORDER BY priority DESC, run_at, id
  LIMIT $2::bigint
  FOR UPDATE SKIP LOCKED
), picked AS (
  UPDATE @schema@.task t
  SET state = 'running', attempt = t.attempt + 1, lease_token = nextval('@schema@.lease_token_seq'),
      lease_until = now() + t.timeout_ms * interval '1 millisecond', worker_id = $3, updated_at = now()
  -- ARRAY(...) keeps the generic plan on the primary key: a join with the
  -- LIMIT-ed candidates is planned for 10% of the table and hashes all of it.
  WHERE t.id = ANY (ARRAY(SELECT id FROM candidates))
  RETURNING t.*
)
SELECT flags.queue_paused, flags.queue_limited, )sql" PAYQ_TASK_COLUMNS R"sql(
FROM flags LEFT JOIN picked t ON true
ORDER BY t.priority DESC, t.run_at, t.id)sql"};

// claim_plain from a claimer's cursor (ClaimCursor), the same statement
// but for one line: only tasks of the cursor's priority that sort after it.
// The scan starts at the cursor in task_claim instead of stepping, from the
// front, over the entries of tasks already claimed, which an old snapshot
// keeps from being vacuumed or marked dead. The row comparison on the
// index's last two columns, after equalities on its first two, is an index
// range.
// Built from claim_plain's text, so that the two cannot drift apart.
inline const std::string claim_plain_after_sql = [] {
  const std::string partition_test = "AND partition_key IS NULL\n";
  std::string sql = claim_plain.sql;
  sql.insert(sql.find(partition_test) + partition_test.size(),
             "    AND priority = $4::smallint AND (run_at, id) > ($5::timestamptz, $6::bigint)\n");
  return sql;
}();
inline const Statement claim_plain_after{"payq_claim_plain_after", claim_plain_after_sql.c_str()};

// The fenced completion: only the attempt that holds the lease moves the
// task on, and its attempt record is written with it.
inline const Statement complete{"payq_task_complete", R"sql(
WITH done AS (
  UPDATE @schema@.task t
  SET state = CASE $3
                WHEN 'success' THEN 'succeeded'
                WHEN 'fail' THEN 'dead'
                WHEN 'retry' THEN CASE WHEN t.attempt >= t.attempt_max THEN 'dead' ELSE 'pending' END
                -- unknown; $10: an operator must look now (Outcome::needs_review)
                ELSE CASE WHEN t.attempt >= t.attempt_max OR $10::boolean THEN 'needs_review' ELSE 'pending' END
              END,
      result = CASE WHEN $3 = 'success' THEN $4::jsonb ELSE t.result END,
      error = CASE WHEN $3 = 'success' THEN NULL ELSE $5 END,
      -- Only a task that will run again gets a new run_at: a finished one
      -- keeps the time it last ran for, never one after it finished.
      run_at = CASE WHEN $3 IN ('retry', 'unknown') AND t.attempt < t.attempt_max AND NOT $10::boolean
                    THEN now() + $6::bigint * interval '1 millisecond'
                    ELSE t.run_at END,
      lease_token = NULL, lease_until = NULL, updated_at = now(),
      finished_at = CASE
                      WHEN $3 IN ('success', 'fail') OR t.attempt >= t.attempt_max OR $10::boolean THEN now()
                    END
  -- A lease token is set exactly while the task runs (constraint
  -- task_consistent), so the token alone fences; a test on state would let
  -- the planner prefer scanning every running task to the primary key.
  WHERE t.id = $1::bigint AND t.lease_token = $2::bigint
  RETURNING t.*
), attempt AS (
  INSERT INTO @schema@.task_attempt (task_id, attempt, lease_token, worker_id, kind, started_at, outcome, error,
                                     duration_ms, traceback)
  SELECT id, attempt, $2::bigint, $7, kind, now() - $8::bigint * interval '1 millisecond', $3,
         CASE WHEN $3 = 'success' THEN NULL ELSE $5 END, $8::bigint, nullif($9, '')
  FROM done
)
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM done t)sql"};

// The fenced completion of many successes at once (tasks without a
// settlement only): each item moves its task on only while the task is
// still running under the item's lease token, and its attempt record is
// written with it. A task with a settlement is left alone: its success
// side must run, which only the per-task completion does.
inline const Statement complete_success_batch{"payq_task_complete_success_batch", R"sql(
WITH input AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[], $4::bigint[])
    AS x(task_id, lease_token, result, duration_ms)
), done AS (
  UPDATE @schema@.task t
  SET state = 'succeeded', result = input.result, error = NULL, lease_token = NULL, lease_until = NULL,
      updated_at = now(), finished_at = now()
  FROM input
  WHERE t.id = input.task_id AND t.lease_token = input.lease_token  -- running: see complete
    AND t.settle_hold_id IS NULL AND t.settle_reverse_transaction_id IS NULL AND t.followup IS NULL
  RETURNING t.id, t.attempt, t.kind, input.lease_token AS attempt_lease_token,
            input.duration_ms AS attempt_duration_ms
), attempt AS (
  INSERT INTO @schema@.task_attempt (task_id, attempt, lease_token, worker_id, kind, started_at, outcome, error,
                                     duration_ms)
  SELECT id, attempt, attempt_lease_token, $5, kind, now() - attempt_duration_ms * interval '1 millisecond',
         'success', NULL, attempt_duration_ms
  FROM done
)
SELECT id FROM done ORDER BY id)sql"};

// The same for one success: the worker's synchronous path, where a task
// without settlement succeeds and is recorded alone, without the batch's
// unnest, join and sort.
inline const Statement complete_success_one{"payq_task_complete_success_one", R"sql(
WITH done AS (
  UPDATE @schema@.task t
  SET state = 'succeeded', result = $3::jsonb, error = NULL, lease_token = NULL, lease_until = NULL,
      updated_at = now(), finished_at = now()
  WHERE t.id = $1::bigint AND t.lease_token = $2::bigint  -- running: see complete
    AND t.settle_hold_id IS NULL AND t.settle_reverse_transaction_id IS NULL AND t.followup IS NULL
  RETURNING t.id, t.attempt, t.kind
), attempt AS (
  INSERT INTO @schema@.task_attempt (task_id, attempt, lease_token, worker_id, kind, started_at, outcome, error,
                                     duration_ms)
  SELECT id, attempt, $2::bigint, $5, kind, now() - $4::bigint * interval '1 millisecond', 'success', NULL,
         $4::bigint
  FROM done
)
SELECT id FROM done)sql"};

inline const Statement give_back{"payq_task_give_back", R"sql(
WITH back AS (
  UPDATE @schema@.task
  SET state = 'pending', attempt = attempt - 1, lease_token = NULL, lease_until = NULL, worker_id = NULL,
      updated_at = now()
  WHERE id = $1::bigint AND lease_token = $2::bigint  -- running: see complete
  RETURNING id
)
DELETE FROM @schema@.queue_start WHERE task_id IN (SELECT id FROM back))sql"};

inline const Statement leases_expired{"payq_leases_expired", R"sql(
SELECT )sql" PAYQ_TASK_COLUMNS R"sql(,
       (extract(epoch FROM now() - (t.lease_until - t.timeout_ms * interval '1 millisecond')) * 1000)::bigint
         AS running_ms
FROM @schema@.task t
WHERE t.state = 'running' AND t.lease_until < now()
ORDER BY t.lease_until
LIMIT $1::bigint
FOR UPDATE SKIP LOCKED)sql"};

inline const Statement task_get{"payq_task_get", R"sql(
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM @schema@.task t WHERE t.id = $1::bigint)sql"};

inline const Statement task_lock{"payq_task_lock", R"sql(
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM @schema@.task t WHERE t.id = $1::bigint FOR UPDATE)sql"};

inline const Statement tasks_list{"payq_tasks_list", R"sql(
SELECT )sql" PAYQ_TASK_COLUMNS R"sql( FROM @schema@.task t
WHERE t.id > $3::bigint AND ($1::text IS NULL OR t.state = $1::text) AND ($2::text IS NULL OR t.queue = $2::text)
  AND ($5::text IS NULL OR t.kind = $5::text)
  AND ($6::text IS NULL OR t.unique_key = $6::text OR t.idempotency_key = $6::text)
  AND ($7::bigint IS NULL OR t.created_at <= now() - $7::bigint * interval '1 millisecond')
ORDER BY t.id LIMIT $4::bigint)sql"};

inline const Statement task_set_state{"payq_task_set_state", R"sql(
WITH changed AS (
  UPDATE @schema@.task
  SET state = $2::text, run_at = CASE WHEN $2::text = 'pending' THEN now() ELSE run_at END,
      attempt_max = CASE WHEN $2::text = 'pending' THEN greatest(attempt_max, attempt + 1) ELSE attempt_max END,
      finished_at = CASE WHEN $2::text IN ('succeeded', 'dead', 'cancelled') THEN now() END,
      -- A task settled as succeeded has no error; the failed attempts keep theirs.
      error = CASE WHEN $2::text = 'succeeded' THEN NULL ELSE error END,
      updated_at = now()
  WHERE id = $1::bigint
  RETURNING id
)
INSERT INTO @schema@.task_action (task_id, action, actor, note)
SELECT id, $3, $4, $5 FROM changed)sql"};

inline const Statement attempts{"payq_task_attempts", R"sql(
SELECT task_id, attempt, lease_token, worker_id, outcome, error, duration_ms, traceback,
       )sql" PAYQ_TS("started_at") R"sql( AS started_at, )sql" PAYQ_TS("finished_at") R"sql( AS finished_at
FROM @schema@.task_attempt WHERE task_id = $1::bigint ORDER BY attempt)sql"};

inline const Statement actions{"payq_task_actions", R"sql(
SELECT task_id, action, actor, coalesce(note, '') AS note, )sql" PAYQ_TS("created_at") R"sql( AS created_at
FROM @schema@.task_action WHERE task_id = $1::bigint ORDER BY id)sql"};

inline const Statement stats{"payq_outbox_stats", R"sql(
SELECT queue, state, count(*) AS n FROM @schema@.task GROUP BY queue, state ORDER BY queue, state)sql"};

// Finished tasks are left out: each state group is read from its partial
// index (task_claim, task_lease, task_waiting_queue_state), which is why
// the states are spelt as ORs.
inline const Statement queues_overview{"payq_queues_overview", R"sql(
SELECT q.name, q.paused,
       CASE WHEN q.paused_until > now() THEN )sql" PAYQ_TS("q.paused_until") R"sql( END AS paused_until,
       q.concurrency_max, q.rate_count_max, q.rate_window_ms, q.amount_max_minor, q.amount_currency,
       q.amount_window_ms, q.weight,
       coalesce(c.pending, 0) AS pending, coalesce(c.runnable, 0) AS runnable, coalesce(c.running, 0) AS running,
       coalesce(c.held, 0) AS held, coalesce(c.dead, 0) AS dead, coalesce(c.needs_review, 0) AS needs_review,
       (extract(epoch FROM now() - c.oldest_runnable_at) * 1000)::bigint AS oldest_runnable_age_ms,
       (SELECT count(*) FROM @schema@.queue_start s
        WHERE s.queue = q.name AND s.started_at > now() - interval '1 minute') AS started_last_minute
FROM @schema@.queue q
LEFT JOIN LATERAL (
  SELECT count(*) FILTER (WHERE t.state = 'pending') AS pending,
         count(*) FILTER (WHERE t.state = 'pending' AND t.run_at <= now()) AS runnable,
         count(*) FILTER (WHERE t.state = 'running') AS running,
         count(*) FILTER (WHERE t.state = 'held') AS held,
         count(*) FILTER (WHERE t.state = 'dead') AS dead,
         count(*) FILTER (WHERE t.state = 'needs_review') AS needs_review,
         min(t.run_at) FILTER (WHERE t.state = 'pending' AND t.run_at <= now()) AS oldest_runnable_at
  FROM @schema@.task t
  WHERE t.queue = q.name
    AND (t.state = 'pending' OR t.state = 'running' OR t.state IN ('held', 'dead', 'needs_review'))
) c ON true
ORDER BY q.name)sql"};

inline const Statement queue_configure{"payq_queue_configure", R"sql(
INSERT INTO @schema@.queue (name, concurrency_max, rate_count_max, rate_window_ms, amount_max_minor,
                            amount_currency, amount_window_ms, weight)
VALUES ($1, $2::integer, $3::integer, $4::bigint, $5::bigint, $6, $7::bigint, $8::integer)
ON CONFLICT (name) DO UPDATE
SET concurrency_max = EXCLUDED.concurrency_max, rate_count_max = EXCLUDED.rate_count_max,
    rate_window_ms = EXCLUDED.rate_window_ms, amount_max_minor = EXCLUDED.amount_max_minor,
    amount_currency = EXCLUDED.amount_currency, amount_window_ms = EXCLUDED.amount_window_ms,
    weight = EXCLUDED.weight, updated_at = now())sql"};

// A queue is known once it has settings or has had a task (enqueue makes
// its row): pausing any other name is refused, not turned into a queue.
inline const Statement queue_known{"payq_queue_known", R"sql(
SELECT EXISTS (SELECT 1 FROM @schema@.queue WHERE name = $1) AS known)sql"};

inline const Statement queue_action_record{"payq_queue_action_record", R"sql(
INSERT INTO @schema@.queue_action (queue, action, actor, note, detail) VALUES ($1, $2, $3, $4, $5::jsonb))sql"};

inline const Statement queue_actions{"payq_queue_actions", R"sql(
SELECT id, queue, action, actor, note, detail::text AS detail, )sql" PAYQ_TS("created_at") R"sql( AS created_at
FROM @schema@.queue_action WHERE $1::text IS NULL OR queue = $1
ORDER BY id DESC LIMIT $2::bigint)sql"};

inline const Statement queue_pause{"payq_queue_pause", R"sql(
INSERT INTO @schema@.queue (name, paused) VALUES ($1, $2::boolean)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, paused_until = NULL, updated_at = now())sql"};

inline const Statement queue_pause_until{"payq_queue_pause_until", R"sql(
INSERT INTO @schema@.queue (name, paused_until) VALUES ($1, now() + $2::bigint * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE
SET paused_until = greatest(coalesce(@schema@.queue.paused_until, now()), EXCLUDED.paused_until),
    updated_at = now())sql"};

inline const Statement prune_tasks{"payq_prune_tasks", R"sql(
WITH gone AS (
  DELETE FROM @schema@.task
  WHERE id = ANY (ARRAY(SELECT id FROM @schema@.task
                        WHERE state IN ('succeeded', 'dead', 'cancelled')
                          AND finished_at < now() - $1::bigint * interval '1 millisecond'
                        ORDER BY finished_at LIMIT $2::bigint))
  RETURNING id
), starts AS (
  -- Each queue's starts are kept for its longest window (at least the
  -- minute the overview counts).
  DELETE FROM @schema@.queue_start s
  USING @schema@.queue q
  WHERE q.name = s.queue
    AND s.started_at < now() - greatest(60000, coalesce(q.rate_window_ms, 0), coalesce(q.amount_window_ms, 0))
                               * interval '1 millisecond'
)
SELECT count(*) AS pruned FROM gone)sql"};

#undef PAYQ_TASK_COLUMNS
#undef PAYQ_TS

}  // namespace payq::outbox_sql
