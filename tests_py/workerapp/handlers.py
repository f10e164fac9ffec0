"""The handlers ``payq worker --app workerapp.handlers`` runs.

Each records its call in :data:`workerapp.RUN_TABLE` through a payq
connection of its own, to ``WORKERAPP_DSN`` and schema ``WORKERAPP_SCHEMA``.

Payload fields (all optional):

``sleep_ms``
    how long the handler works between recording its start and its end;
``block_attempt`` and ``lock_key``
    on that attempt, the handler waits for the advisory lock ``lock_key``,
    which the test holds, instead of finishing: a handler stuck mid-call,
    waiting to be SIGKILLed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional

import payq
from workerapp import RUN_TABLE

# A blocked handler gives up after this long, so a test that forgets to
# release its lock cannot leave a worker hanging for ever.
_lock_wait_timeout = "60s"
_sleep_ms_max = 10_000

_database: Optional[payq.Database] = None
_database_lock = threading.Lock()


def _db() -> payq.Database:
    global _database
    with _database_lock:
        if _database is None:
            _database = payq.connect(os.environ["WORKERAPP_DSN"], schema=os.environ["WORKERAPP_SCHEMA"],
                                     migrate=False)
        return _database


def _run_start(task: payq.TaskRun) -> int:
    """Record the start of this call, committed at once so that the test
    sees it while the handler still runs."""
    with _db().transaction() as t:
        rows = t.execute(f"""
            INSERT INTO {RUN_TABLE} (task_id, kind, queue, attempt, lease_token, idempotency_key, unique_key, pid,
                                     claimed_at)
            VALUES ($1::bigint, $2, $3, $4::integer, $5::bigint, $6, $7, $8::integer,
                    (SELECT lease_until - timeout_ms * interval '1 millisecond' FROM @schema@.task
                     WHERE id = $1::bigint AND lease_token = $5::bigint))
            RETURNING run_id""",
            [task.id, task.kind, task.queue, task.attempt, task.lease_token, task.idempotency_key,
             task.unique_key, os.getpid()])
    return int(rows[0][0])


def _block_on(lock_key: int) -> None:
    """Wait until the test releases its advisory lock (or the timeout)."""
    with _db().transaction() as t:
        t.execute(f"SET LOCAL lock_timeout = '{_lock_wait_timeout}'")
        t.execute("SELECT pg_advisory_xact_lock($1::bigint)", [lock_key])


@payq.handler("wp.record")
@payq.handler("wp.block")
@payq.handler("tick")
def record(task: payq.TaskRun) -> None:
    run_id = _run_start(task)
    payload = task.payload or {}
    if payload.get("block_attempt") == task.attempt:
        _block_on(int(payload["lock_key"]))
    sleep_ms = min(int(payload.get("sleep_ms", 0)), _sleep_ms_max)
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)
    # The end is recorded in the completing transaction: it commits only
    # while this attempt still holds the lease (else payq.LeaseLost rolls
    # it back).
    with _db().transaction() as t:
        t.execute(f"UPDATE {RUN_TABLE} SET ended_at = clock_timestamp() WHERE run_id = $1::bigint", [run_id])
        task.complete(t, {"run_id": run_id, "pid": os.getpid()})
