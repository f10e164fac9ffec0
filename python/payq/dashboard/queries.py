"""The dashboard's own read-only SQL: views the library's API does not
offer (task lists in any order with payload search, what each worker runs,
the ledger rows a task moved, entries with their accounts' owners).

Each statement is a named constant; values are always bound parameters
(``$1``...); ``@schema@`` stands for payq's schema. Orders come from
:data:`TASK_ORDERS`, a fixed table, never from the request.
"""

from __future__ import annotations

from typing import Dict, Optional

__all__ = ["cell", "TASK_ORDERS", "TASKS_PAGE", "RUNNING_BY_WORKER", "WORKERS_RECENT", "MAINTENANCE_LEADER",
           "TASK_LEDGER_OPERATIONS", "TRANSACTION_ACCOUNTS", "JOURNAL_COUNTERPARTS", "ACCOUNTS_BY_OWNER_PREFIX",
           "SEARCH_TIMEOUT"]

def cell(value: Optional[str]) -> str:
    """A NOT NULL column's text (rows come back as text or None)."""
    assert value is not None, "a NOT NULL column came back NULL"
    return value


# A search scans what the other filters leave (payload containment has no
# index: one would tax every enqueue), so it is bounded in time instead.
SEARCH_TIMEOUT = "SET LOCAL statement_timeout = '5s'"

_TS = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

_TASK_COLUMNS = (
    "id, state, queue, kind, attempt, attempt_max, idempotency_key, amount_minor, currency, worker_id, "
    "left(error, 200) AS error, " + _TS.format(col="created_at") + " AS created_at, "
    + _TS.format(col="run_at") + " AS run_at, " + _TS.format(col="finished_at") + " AS finished_at"
)

_TASKS_WHERE = """
WHERE ($1::text IS NULL OR state = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::text IS NULL OR unique_key = $4 OR idempotency_key = $4)
  AND ($5::jsonb IS NULL OR payload @> $5::jsonb OR coalesce(payload @> $6::jsonb, false))
"""

TASK_ORDERS: Dict[str, str] = {
    # name: ORDER BY
    "newest": "id DESC",
    "oldest": "id",
    "next_run": "run_at, id",
    "finished": "finished_at DESC, id DESC",
}
"""How a task list may be sorted; ``newest`` first by default."""

_TASK_ORDER_SCOPE: Dict[str, str] = {
    # Only tasks that will run have a next run, and only finished ones a
    # finish time: the others are left out of those orders (which also lets
    # "finished" read the task_finished index instead of sorting the table).
    "next_run": "AND state IN ('pending', 'held')",
    "finished": "AND finished_at IS NOT NULL",
}

TASK_ORDER_LABELS: Dict[str, str] = {
    "newest": "newest first", "oldest": "oldest first", "next_run": "next run first (pending, held)",
    "finished": "recently finished first (finished only)",
}


def TASKS_PAGE(order: str) -> str:  # noqa: N802 (a statement, named like the others)
    """One page of tasks in ``order`` (a key of :data:`TASK_ORDERS`):
    $1 state, $2 queue, $3 kind, $4 key, $5/$6 payload containment (JSON),
    $7 limit, $8 offset."""
    return (f"SELECT {_TASK_COLUMNS} FROM @schema@.task {_TASKS_WHERE} {_TASK_ORDER_SCOPE.get(order, '')} "
            f"ORDER BY {TASK_ORDERS[order]} LIMIT $7::bigint OFFSET $8::bigint")


RUNNING_BY_WORKER = f"""
SELECT worker_id, id, queue, kind, attempt, attempt_max,
       {_TS.format(col="updated_at")} AS since,
       {_TS.format(col="lease_until")} AS lease_until,
       lease_until < now() AS overdue
FROM @schema@.task
WHERE state = 'running'
ORDER BY worker_id, id
LIMIT $1::bigint
"""
"""Tasks running now with the worker holding each (a claim sets the lease
and the worker; a lease past its end means the worker stopped answering:
the rescuer will take the task back)."""

WORKERS_RECENT = f"""
SELECT worker_id, count(*) AS attempts,
       count(*) FILTER (WHERE outcome <> 'success') AS failed,
       {_TS.format(col="max(finished_at)")} AS last_finished
FROM @schema@.task_attempt
WHERE finished_at > now() - $1::bigint * interval '1 second'
GROUP BY worker_id
ORDER BY max(finished_at) DESC
LIMIT $2::bigint
"""
"""Workers that finished attempts lately, with how many: the sign of life
of a worker that is idle now."""

MAINTENANCE_LEADER = f"""
SELECT holder, {_TS.format(col="expires_at")} AS expires_at, expires_at > now() AS live
FROM @schema@.maintenance_lease
"""
"""The worker holding the maintenance lease: it renews it at every tick."""

TASK_LEDGER_OPERATIONS = """
SELECT o.key, o.kind, o.transaction_id, o.hold_id
FROM @schema@.operation o
WHERE o.key IN ($1, $2, $3, $4)
ORDER BY o.created_at, o.key
"""
"""The ledger operations a task moved, by their keys: the hold's own key
and the settlement's (``task:<id>:capture``, ``:release``, ``:reverse``);
the hold's key is NULL for a task without a hold."""

TRANSACTION_ACCOUNTS = """
SELECT a.id, a.owner, a.namespace, a.currency
FROM @schema@.account a
WHERE a.id = ANY ($1::bigint[])
"""
"""Owners of the accounts an entry list names."""

JOURNAL_COUNTERPARTS = """
SELECT e.transaction_id, string_agg(DISTINCT a.owner, ', ') AS owners
FROM @schema@.entry e
JOIN @schema@.account a ON a.id = e.account_id
WHERE e.transaction_id = ANY ($1::bigint[]) AND e.account_id <> $2::bigint
GROUP BY e.transaction_id
"""
"""For each transaction of a journal page, the owners of its other legs."""

ACCOUNTS_BY_OWNER_PREFIX = """
SELECT id FROM @schema@.account
WHERE owner LIKE $1 ESCAPE '\\' AND id > $2::bigint
ORDER BY id
LIMIT $3::bigint
"""
"""Account ids whose owner starts with a prefix ($1: the LIKE pattern)."""
