-- An idempotency key names one request: a task that settles money and
-- carries a key the application chose is the only task of its kind with
-- that key. A second enqueue of the same request returns it; a different
-- request under the key is refused (docs/outbox.md, "Keys").
--
-- Like task_key, rows here outlive the pruning of task rows, so a request
-- retried long after its payout finished still finds its task.
CREATE TABLE @schema@.task_idempotency (
  kind         @schema@.task_kind NOT NULL,
  key          @schema@.idempotency_key NOT NULL,
  task_id      bigint NOT NULL,
  request_hash text,  -- NULL for tasks enqueued before this migration: not compared
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, key)
);

-- Before this migration one key could name several such tasks (two payout
-- tasks for one withdrawal); such a database is left unchanged for an
-- operator to look at.
DO $$
DECLARE
  shared text;
BEGIN
  SELECT string_agg(format('%s %L: tasks %s', kind, idempotency_key, ids), '; ')
  INTO shared
  FROM (SELECT kind, idempotency_key, string_agg(id::text, ', ' ORDER BY id) AS ids
        FROM @schema@.task
        WHERE idempotency_key <> 'task:' || id
          AND (settle_hold_id IS NOT NULL OR settle_reverse_transaction_id IS NOT NULL OR followup IS NOT NULL)
        GROUP BY kind, idempotency_key HAVING count(*) > 1) d;
  IF shared IS NOT NULL THEN
    RAISE EXCEPTION 'payq: one idempotency key names more than one settling task (%); cancel or resolve the extra tasks and give them new keys, then migrate again. Inspect with: SELECT id, kind, idempotency_key, state FROM @schema@.task WHERE idempotency_key <> ''task:'' || id ORDER BY kind, idempotency_key, id', shared
      USING ERRCODE = 'P0001';
  END IF;
END
$$;

INSERT INTO @schema@.task_idempotency (kind, key, task_id)
SELECT kind, idempotency_key, id FROM @schema@.task
WHERE idempotency_key <> 'task:' || id
  AND (settle_hold_id IS NOT NULL OR settle_reverse_transaction_id IS NOT NULL OR followup IS NOT NULL);
