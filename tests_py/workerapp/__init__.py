"""Handlers for the worker processes of tests_py/test_worker_processes.py.

The test starts ``payq worker --app workerapp.handlers`` with tests_py on
the subprocess's PYTHONPATH. This package's ``__init__`` registers nothing,
so the test process can import it (for :func:`tables_create`) without
putting handlers in payq's default registry.

Every handler call is recorded in ``@schema@.workerapp_run`` of the test's
schema, so the test can check from outside what ran where and when.
"""

from __future__ import annotations

import payq

__all__ = ["RUN_TABLE", "claim_breaker_install", "tables_create"]

RUN_TABLE = "@schema@.workerapp_run"


def tables_create(db: payq.Database) -> None:
    """Create the table the handlers write to, in ``db``'s schema.

    ``claimed_at`` is when the attempt was claimed, read back from the task
    row the claim wrote (``lease_until - timeout``), so the test can check a
    rate limit without trusting payq's own record of starts. ``ended_at`` is
    written in the transaction that completes the task, so a run with an
    ``ended_at`` is exactly a run whose success was recorded.
    """
    with db.transaction() as t:
        t.execute(f"""
            CREATE TABLE {RUN_TABLE} (
              run_id          bigserial PRIMARY KEY,
              task_id         bigint NOT NULL,
              kind            text NOT NULL,
              queue           text NOT NULL,
              attempt         integer NOT NULL,
              lease_token     bigint NOT NULL,
              idempotency_key text NOT NULL,
              unique_key      text,
              pid             integer NOT NULL,
              claimed_at      timestamptz,
              started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
              ended_at        timestamptz
            )""")


# Turns every claim into a task left `held` without a lease, as a faulty
# trigger or migration might: a broken invariant, which the C++ claiming
# thread treats as fatal instead of retrying.
_CLAIM_BREAKER_SQL = ("""
CREATE FUNCTION @schema@.test_claim_breaker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state = 'pending' AND NEW.state = 'running' THEN
    NEW.state := 'held';
    NEW.lease_token := NULL;
  END IF;
  RETURN NEW;
END $$""", """
CREATE TRIGGER test_claim_breaker BEFORE UPDATE ON @schema@.task
  FOR EACH ROW EXECUTE FUNCTION @schema@.test_claim_breaker()""")


def claim_breaker_install(db: payq.Database) -> None:
    """Make every later claim in ``db``'s schema break the claim invariant,
    so a worker thread that claims a task fails fatally."""
    with db.transaction() as t:
        for statement in _CLAIM_BREAKER_SQL:
            t.execute(statement)
