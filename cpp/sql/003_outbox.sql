-- The outbox queue: tasks written in the business transaction, executed
-- after commit by workers, settled against the ledger exactly once.

CREATE SEQUENCE @schema@.task_id_seq AS bigint;
-- Every claim draws a new lease token: a fencing epoch. A completion counts
-- only while the task is still running under the token it was claimed with.
CREATE SEQUENCE @schema@.lease_token_seq AS bigint;

-- Per-queue settings. The row is also the lock that serialises claims on a
-- queue with limits or partition keys, so limits hold across every worker
-- on every machine.
CREATE TABLE @schema@.queue (
  name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,100}$'),
  paused           boolean NOT NULL DEFAULT false,
  paused_until     timestamptz,  -- back-pressure from a provider (429, Retry-After)
  concurrency_max  integer CHECK (concurrency_max > 0),
  rate_count_max   integer CHECK (rate_count_max > 0),  -- starts per rate window
  rate_window_ms   integer CHECK (rate_window_ms > 0),
  amount_max_minor bigint CHECK (amount_max_minor > 0),  -- money started per amount window
  amount_currency  text,
  amount_window_ms integer CHECK (amount_window_ms > 0),
  weight           integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
  uses_partitions  boolean NOT NULL DEFAULT false,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK ((rate_count_max IS NULL) = (rate_window_ms IS NULL)),
  CHECK ((amount_max_minor IS NULL) = (amount_window_ms IS NULL) AND (amount_max_minor IS NULL) = (amount_currency IS NULL))
);

CREATE TABLE @schema@.task (
  id              bigint PRIMARY KEY DEFAULT nextval('@schema@.task_id_seq'),
  queue           text NOT NULL,
  kind            text NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
  payload         jsonb NOT NULL,
  state           text NOT NULL CHECK (state IN ('held', 'pending', 'running', 'succeeded', 'dead',
                                                 'needs_review', 'cancelled')),
  priority        smallint NOT NULL DEFAULT 0,
  run_at          timestamptz NOT NULL DEFAULT now(),
  attempt         integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  attempt_max     integer NOT NULL CHECK (attempt_max BETWEEN 1 AND 1000),
  timeout_ms      integer NOT NULL CHECK (timeout_ms > 0),
  unique_key      text,
  partition_key   text,
  -- Stable across attempts: what a provider sees as the request's key.
  idempotency_key text NOT NULL,
  amount_minor    bigint CHECK (amount_minor > 0),
  currency        text,
  -- Settlement: capture this hold into that account on success, release it
  -- on final failure; or reverse a transaction on final failure; and/or
  -- enqueue a follow-up task on final failure.
  settle_hold_id            bigint,
  settle_capture_account_id bigint,
  settle_reverse_transaction_id bigint,
  followup        jsonb,
  lease_token     bigint,
  lease_until     timestamptz,
  worker_id       text,
  result          jsonb,
  error           text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  CHECK ((state = 'running') = (lease_token IS NOT NULL)),
  CHECK ((amount_minor IS NULL) = (currency IS NULL))
);
-- The claim index: small, because finished tasks leave it.
CREATE INDEX task_claim ON @schema@.task (queue, priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX task_lease ON @schema@.task (lease_until) WHERE state = 'running';
CREATE INDEX task_running_partition ON @schema@.task (queue, partition_key)
  WHERE state = 'running' AND partition_key IS NOT NULL;
CREATE INDEX task_finished ON @schema@.task (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX task_state_queue ON @schema@.task (state, queue);

-- Unique keys live here, not on the task, so they outlive the pruning of
-- task rows (retention: see docs/outbox.md).
CREATE TABLE @schema@.task_key (
  key        text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
  task_id    bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Every attempt, append-only, kept when task rows are pruned.
CREATE TABLE @schema@.task_attempt (
  task_id     bigint NOT NULL,
  attempt     integer NOT NULL,
  lease_token bigint NOT NULL,
  worker_id   text NOT NULL,
  kind        text NOT NULL,
  started_at  timestamptz NOT NULL,
  finished_at timestamptz NOT NULL DEFAULT now(),
  outcome     text NOT NULL CHECK (outcome IN ('success', 'retry', 'fail', 'unknown', 'returned')),
  error       text,
  duration_ms bigint NOT NULL,
  PRIMARY KEY (task_id, attempt)
);
CREATE TRIGGER task_attempt_append_only BEFORE UPDATE OR DELETE ON @schema@.task_attempt
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();

-- Starts inside the rate and amount windows of limited queues.
CREATE TABLE @schema@.queue_start (
  queue        text NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  task_id      bigint NOT NULL,
  amount_minor bigint
);
CREATE INDEX queue_start_window ON @schema@.queue_start (queue, started_at);

-- Operator actions on tasks (release of held tasks, retry, cancel, resolve).
CREATE TABLE @schema@.task_action (
  task_id    bigint NOT NULL,
  action     text NOT NULL,
  actor      text NOT NULL,
  note       text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_action_task ON @schema@.task_action (task_id);

CREATE TABLE @schema@.cron_entry (
  name       text PRIMARY KEY,
  schedule   text NOT NULL,
  time_zone  text NOT NULL DEFAULT 'UTC',
  queue      text NOT NULL,
  kind       text NOT NULL,
  payload    jsonb NOT NULL DEFAULT '{}',
  last_slot  timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
