-- The inbox: result callbacks from providers, each event once.
--
-- A provider tells us, on its own schedule, whether a payout it received
-- was applied. The event is recorded under (provider, event_id) in the
-- same transaction that settles the matching task, so a callback delivered
-- twice, or racing the worker's own result, settles nothing twice. Events
-- are kept far longer than task rows (see docs/inbox.md): a provider that
-- re-sends an old notification must still be recognised.
CREATE TABLE @schema@.inbox_event (
  provider    text NOT NULL CHECK (length(provider) BETWEEN 1 AND 100),
  event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
  task_key    text NOT NULL CHECK (length(task_key) BETWEEN 1 AND 255),  -- the idempotency key the provider saw
  applied     boolean NOT NULL,
  effect      text NOT NULL CHECK (effect IN ('settled_success', 'settled_failure', 'already_settled', 'no_task',
                                              'conflict', 'ignored')),
  task_id     bigint,
  payload     jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (provider, event_id)
);
CREATE INDEX inbox_event_received ON @schema@.inbox_event (received_at);
CREATE TRIGGER inbox_event_no_update BEFORE UPDATE ON @schema@.inbox_event
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();

-- Callbacks find their task by the key the provider saw.
CREATE INDEX task_idempotency_key ON @schema@.task (idempotency_key);
