-- A leaner claim and completion (see docs/outbox.md, "What a claim costs").
--
-- Claiming and completing are UPDATEs of task rows, and PostgreSQL 15
-- re-reads and re-plans every CHECK constraint of a table in each statement
-- that updates it, whichever columns change: eight of them on task. Rules
-- on a single column become domains (cached per session, checked only when
-- that column is assigned); the two rules that span columns stay table
-- constraints, as one.
CREATE DOMAIN @schema@.task_kind AS text CHECK (length(VALUE) BETWEEN 1 AND 200);
CREATE DOMAIN @schema@.task_state AS text
  CHECK (VALUE IN ('held', 'pending', 'running', 'succeeded', 'dead', 'needs_review', 'cancelled'));
CREATE DOMAIN @schema@.nonnegative_int AS integer CHECK (VALUE >= 0);
CREATE DOMAIN @schema@.positive_int AS integer CHECK (VALUE > 0);
CREATE DOMAIN @schema@.attempt_count AS integer CHECK (VALUE BETWEEN 1 AND 1000);
CREATE DOMAIN @schema@.attempt_outcome AS text
  CHECK (VALUE IN ('success', 'retry', 'fail', 'unknown', 'returned'));

ALTER TABLE @schema@.task
  DROP CONSTRAINT task_kind_check,
  DROP CONSTRAINT task_state_check,
  DROP CONSTRAINT task_attempt_check,
  DROP CONSTRAINT task_attempt_max_check,
  DROP CONSTRAINT task_timeout_ms_check,
  DROP CONSTRAINT task_amount_minor_check,
  DROP CONSTRAINT task_check,
  DROP CONSTRAINT task_check1,
  ALTER COLUMN kind TYPE @schema@.task_kind,
  ALTER COLUMN state TYPE @schema@.task_state,
  ALTER COLUMN attempt TYPE @schema@.nonnegative_int,
  ALTER COLUMN attempt_max TYPE @schema@.attempt_count,
  ALTER COLUMN timeout_ms TYPE @schema@.positive_int,
  ALTER COLUMN amount_minor TYPE @schema@.positive_bigint,
  -- A running task has a lease token and only a running one; an amount
  -- always comes with its currency.
  ADD CONSTRAINT task_consistent
    CHECK ((state = 'running') = (lease_token IS NOT NULL) AND (amount_minor IS NULL) = (currency IS NULL));

ALTER TABLE @schema@.task_key
  DROP CONSTRAINT task_key_key_check,
  ALTER COLUMN key TYPE @schema@.idempotency_key;

ALTER TABLE @schema@.task_attempt
  DROP CONSTRAINT task_attempt_outcome_check,
  ALTER COLUMN outcome TYPE @schema@.attempt_outcome;

-- The (state, queue) index held an entry for every version of every task,
-- finished ones included, and a state change (every claim and completion)
-- added one more. Pending tasks are in task_claim and running ones in
-- task_lease already; this one keeps those waiting for an operator.
DROP INDEX @schema@.task_state_queue;
CREATE INDEX task_waiting_queue_state ON @schema@.task (queue, state) WHERE state IN ('held', 'dead', 'needs_review');

-- Callbacks find their task by the key the provider saw (004), but most
-- tasks keep the default key 'task:<id>', which names the task already:
-- only keys an application chose are indexed, so claims and completions
-- of the others add no entry here (the inbox reads those by id).
DROP INDEX @schema@.task_idempotency_key;
CREATE INDEX task_idempotency_key_chosen ON @schema@.task (idempotency_key)
  WHERE idempotency_key <> ('task:' || id::text);
