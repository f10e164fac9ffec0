-- Settlement that nothing can undermine (docs/outbox.md, "What settlement
-- guarantees").
--
-- 1. A hold that a task settles belongs to that task: hold.task_id names it,
--    written with the task. While the task is live (held, pending, running
--    or needs_review) the hold never expires, and only the task's own
--    settlement (or an operator's action on the task) captures or releases
--    it. A hold has at most one such task.
ALTER TABLE @schema@.hold ADD COLUMN task_id bigint;

-- Before this migration nothing stopped two live tasks from settling one
-- hold; such a database is left unchanged for an operator to look at.
DO $$
DECLARE
  shared text;
BEGIN
  SELECT string_agg(format('hold %s: tasks %s', settle_hold_id, ids), '; ')
  INTO shared
  FROM (SELECT settle_hold_id, string_agg(id::text, ', ' ORDER BY id) AS ids
        FROM @schema@.task
        WHERE settle_hold_id IS NOT NULL AND state IN ('held', 'pending', 'running', 'needs_review')
        GROUP BY settle_hold_id HAVING count(*) > 1) d;
  IF shared IS NOT NULL THEN
    RAISE EXCEPTION 'payq: more than one live task settles the same hold (%); resolve or cancel all but one, then migrate again. Inspect with: SELECT id, state, kind, settle_hold_id FROM @schema@.task WHERE settle_hold_id IS NOT NULL AND state IN (''held'', ''pending'', ''running'', ''needs_review'') ORDER BY settle_hold_id, id', shared
      USING ERRCODE = 'P0001';
  END IF;
END
$$;

UPDATE @schema@.hold h SET task_id = t.id
FROM @schema@.task t
WHERE t.settle_hold_id = h.id AND t.state IN ('held', 'pending', 'running', 'needs_review');

-- The maintenance expiry reads active holds by expiry; the owner check
-- reads the task by primary key.

-- 2. A unique key names one request: the request's hash is kept with the
--    key, so a reuse with a different kind, queue, payload, amount,
--    settlement or attempt_max is refused. Keys taken before this migration
--    have no hash and are not compared.
ALTER TABLE @schema@.task_key ADD COLUMN request_hash text;

-- 3. Queue rate and amount windows up to 366 days, in milliseconds: an
--    integer stopped at about 24.8 days.
ALTER TABLE @schema@.queue
  ALTER COLUMN rate_window_ms TYPE bigint,
  ALTER COLUMN amount_window_ms TYPE bigint;
