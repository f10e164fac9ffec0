-- Operator actions keep the order they were taken in. Actions recorded in
-- one transaction share created_at (now() is the transaction's start), so
-- ordering by time alone fell back on the action's name: a release then a
-- cancel in one transaction read as cancel, release. Each action now has a
-- number from a sequence, taken as it is inserted. Rows recorded before
-- this migration are numbered in their physical order.
ALTER TABLE @schema@.task_action ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
DROP INDEX @schema@.task_action_task;
CREATE INDEX task_action_task ON @schema@.task_action (task_id, id);
