"""Burn-down with a Python no-op handler under payq.Worker: the C++ engine
claims and completes, Python runs the handler (GIL taken per call). The same
rows and the same worker settings as the C++ burn-down of
bench/queue_bench.cpp, which runs this script on its server and computes the
Python/C++ ratio. Prints one JSON document; progress goes to stderr.

    python bench/queue_python.py [--dsn DSN] [--tasks 10000] [--concurrency 1,8,32] [--claim-batch 10] [--batched]

Without --dsn it starts a throwaway cluster of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, TextIO

import payq
from payq.testing import throwaway_cluster
from payq.worker import Registry

# The same statements as bench/queue_bench.cpp (payq_reset_sql, payq_prefill).
RESET_SQL = [
    "TRUNCATE @schema@.task, @schema@.task_attempt, @schema@.queue_start, @schema@.task_key",
    "INSERT INTO @schema@.queue (name) VALUES ('default') ON CONFLICT (name) DO NOTHING",
]
PREFILL_SQL = """
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n"""
COUNT_SQL = "SELECT count(*) FILTER (WHERE state = 'succeeded') FROM @schema@.task"

POLL_SECONDS = 0.002


def prefill(db: payq.Database, tasks: int) -> None:
    for sql in RESET_SQL:
        with db.transaction() as t:
            t.execute(sql)
    with db.transaction() as t:
        t.execute(PREFILL_SQL, [tasks])
    with db.transaction() as t:
        t.execute("ANALYZE @schema@.task")


@contextmanager
def worker_log_discarded(progress: TextIO) -> Iterator[None]:
    """The Python Worker cannot be given a log sink: it writes one JSON line
    per task to stderr (fd 2). Point fd 2 at /dev/null for the run, the same
    write the C++ benchmark's sink does, and keep progress on a copy."""
    progress.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def burn(db: payq.Database, concurrency: int, batch: int, tasks: int, timeout_s: float, batched: bool,
         progress: TextIO) -> Dict[str, Any]:
    registry = Registry()

    @registry.handler("bench.noop", batched_completion=batched)
    def noop(task: payq.TaskRun) -> None:
        return None

    prefill(db, tasks)
    worker = payq.Worker(db, registry=registry, concurrency=concurrency, batch=batch)
    timed_out = False
    with worker_log_discarded(progress):
        started = time.monotonic()
        worker.start()
        # Bounded by the timeout.
        while worker.stats()["succeeded"] < tasks:
            if time.monotonic() - started > timeout_s:
                timed_out = True
                break
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        worker.stop()
    stats = worker.stats()
    with db.transaction() as t:
        rows = int(t.execute(COUNT_SQL)[0][0] or 0)
    return {
        "concurrency": concurrency,
        "per_s": round(stats["succeeded"] / seconds, 1) if seconds > 0 else 0.0,
        "seconds": round(seconds, 3),
        "timed_out": timed_out,
        "succeeded_rows": rows,
        "verified": rows == tasks,
        "worker": {k: stats[k] for k in ("claimed", "succeeded", "lease_lost", "complete_errors",
                                          "database_errors", "handler_exceptions")},
    }


def run(dsn: str, schema: str, tasks: int, concurrency: List[int], batch: int, timeout_s: float,
        batched: bool) -> Dict[str, Any]:
    db = payq.connect(dsn, schema=schema, migrate=True)
    results = []
    for c in concurrency:
        row = burn(db, c, batch, tasks, timeout_s, batched, sys.stderr)
        print(f"[queue_python] {json.dumps({'concurrency': c, 'per_s': row['per_s']})}", file=sys.stderr, flush=True)
        results.append(row)
    return {
        "bench": "queue_python",
        "python": sys.version.split()[0],
        "tasks": tasks,
        "claim_batch": batch,
        "completion": "batched" if batched else "synchronous",
        "handler": "@registry.handler('bench.noop') def noop(task): return None  (success, result null)",
        "worker_options": "payq.Worker defaults: listen on, maintenance on, poll_interval 1 s; "
                          "log lines to /dev/null",
        "results": results,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="server to use (default: a throwaway cluster)")
    parser.add_argument("--schema", default="payq")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--claim-batch", type=int, default=10)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--batched", action="store_true", help="register the handler with batched_completion=True")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.dsn:
        doc = run(args.dsn, args.schema, args.tasks, concurrency, args.claim_batch, args.timeout_s, args.batched)
    else:
        with throwaway_cluster() as dsn:
            doc = run(dsn, args.schema, args.tasks, concurrency, args.claim_batch, args.timeout_s, args.batched)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
