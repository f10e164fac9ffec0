-- Operator actions on queues (pause, resume, pause for a while, limits),
-- with who took them and why: the queue's counterpart of task_action, so
-- that "who paused payouts at 3 am" has an answer. Append-only. Back-pressure
-- pauses a worker takes by itself (a provider's 429) name no actor and are
-- not recorded here.
CREATE TABLE @schema@.queue_action (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue      text NOT NULL,
  action     text NOT NULL CHECK (action IN ('pause', 'resume', 'pause_for', 'configure')),
  actor      text NOT NULL CHECK (actor <> ''),
  note       text NOT NULL DEFAULT '',
  -- What the action set: the pause's length, or the queue's limits.
  detail     jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_action_queue ON @schema@.queue_action (queue, id);
CREATE TRIGGER queue_action_append_only BEFORE UPDATE OR DELETE ON @schema@.queue_action
  FOR EACH ROW EXECUTE FUNCTION @schema@.append_only();

-- The stack trace of an attempt whose handler raised, as its language
-- printed it: its last 8 KiB, the innermost frames, where the fault is.
-- The short error stays in `error`.
ALTER TABLE @schema@.task_attempt ADD COLUMN traceback text;
