// Every SQL statement of the inbox, by name.
#pragma once

#include "payq/db.hpp"

namespace payq::inbox_sql {

// Serialises deliveries of one event (a provider re-sending while the
// first delivery is still being settled) without a row to lock yet.
inline const Statement event_lock{"payq_inbox_event_lock", R"sql(
SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7202))::text AS locked)sql"};

inline const Statement event_seen{"payq_inbox_event_seen", R"sql(
SELECT effect FROM @schema@.inbox_event WHERE provider = $1 AND event_id = $2)sql"};

inline const Statement event_record{"payq_inbox_event_record", R"sql(
INSERT INTO @schema@.inbox_event (provider, event_id, task_key, applied, effect, task_id, payload)
VALUES ($1, $2, $3, $4::boolean, $5, $6::bigint, $7::jsonb))sql"};

// The task a key names: a live one first (several tasks may share a
// caller-chosen key), else the newest. A chosen key is found through its
// partial index (task_idempotency_key_chosen, 006_outbox_lean.sql), the
// default 'task:<id>' through the id it names.
inline const Statement task_by_key_lock{"payq_inbox_task_by_key_lock", R"sql(
SELECT id, state, attempt, kind, lease_token,
       (extract(epoch FROM now() - (lease_until - timeout_ms * interval '1 millisecond')) * 1000)::bigint
         AS running_ms
FROM @schema@.task
WHERE id = (
  SELECT k.id FROM (
    SELECT id, state FROM @schema@.task
    WHERE idempotency_key = $1 AND idempotency_key <> ('task:' || id::text)
    UNION ALL
    SELECT id, state FROM @schema@.task
    WHERE id = CASE WHEN $1 ~ '^task:[0-9]{1,18}$' THEN substr($1, 6)::bigint END AND idempotency_key = $1
  ) k
  ORDER BY k.state IN ('running', 'pending', 'needs_review') DESC, k.id DESC
  LIMIT 1)
FOR UPDATE)sql"};

// Settles a task through a callback; a running attempt is recorded as
// completed by the callback, which also fences the worker out (its lease
// token is cleared).
inline const Statement task_settle{"payq_inbox_task_settle", R"sql(
WITH settled AS (
  UPDATE @schema@.task
  SET state = $2::text, result = CASE WHEN $2::text = 'succeeded' THEN $3::jsonb ELSE result END,
      error = CASE WHEN $2::text = 'dead' THEN $4 ELSE NULL END,
      lease_token = NULL, lease_until = NULL, finished_at = now(), updated_at = now()
  WHERE id = $1::bigint
  RETURNING id, attempt, kind
), attempt AS (
  INSERT INTO @schema@.task_attempt (task_id, attempt, lease_token, worker_id, kind, started_at, outcome, error,
                                     duration_ms)
  SELECT id, attempt, $5::bigint, $6, kind, now() - $7::bigint * interval '1 millisecond',
         CASE WHEN $2::text = 'succeeded' THEN 'success' ELSE 'fail' END,
         CASE WHEN $2::text = 'dead' THEN $4 END, $7::bigint
  FROM settled WHERE $5::bigint IS NOT NULL
)
INSERT INTO @schema@.task_action (task_id, action, actor, note)
SELECT id, $8, $6, $9 FROM settled)sql"};

inline const Statement prune{"payq_inbox_prune", R"sql(
WITH gone AS (
  DELETE FROM @schema@.inbox_event
  WHERE (provider, event_id) IN (SELECT provider, event_id FROM @schema@.inbox_event
                                 WHERE received_at < now() - $1::bigint * interval '1 millisecond'
                                 ORDER BY received_at LIMIT $2::bigint)
  RETURNING 1
)
SELECT count(*) AS pruned FROM gone)sql"};

}  // namespace payq::inbox_sql
