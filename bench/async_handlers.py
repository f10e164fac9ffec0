"""Async Python handlers against sync ones, under payq.Worker, same run and
same server: a burn-down of no-op tasks (``async def noop(task): return
None`` against ``def noop(task): return None``), the async ones at 32 and
256 tasks in flight (worker threads x claim batch, all of a batch in flight
on the handler event loop) with 32 worker threads and with 4, the sync
ones with 32 threads (32 in flight). Every completion is its own fenced
commit, recorded by the worker thread that claimed the task, so the
number of worker threads bounds the commits in flight for both styles.
``--sleep-ms`` makes each handler wait that long (``asyncio.sleep`` against
``time.sleep``), as a provider call does.

Prints one JSON document; a short summary goes to stderr.

    python bench/async_handlers.py [--dsn DSN] [--tasks 5000] [--sleep-ms 0]

Without --dsn it starts a private cluster with fsync on (on disk, not
/dev/shm), removed afterwards. Each row has the rate and the worker
process's CPU time per task (user+system, this process: the engine, the
GIL and the loop), less sensitive to a noisy machine than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import payq
from payq.aio.handler_loop import handler_loop
from payq.embedded import EmbeddedServer
from payq.worker import Registry

RESET_SQL = [
    "TRUNCATE @schema@.task, @schema@.task_attempt, @schema@.queue_start, @schema@.task_key",
    "INSERT INTO @schema@.queue (name) VALUES ('default') ON CONFLICT (name) DO NOTHING",
]
PREFILL_SQL = """
INSERT INTO @schema@.task (id, queue, kind, payload, state, attempt_max, timeout_ms, idempotency_key)
SELECT n.id, 'default', 'bench.noop', jsonb_build_object('n', n.g), 'pending', 10, 60000, 'task:' || n.id
FROM (SELECT nextval('@schema@.task_id_seq') AS id, g FROM generate_series(1, $1::bigint) g) n"""
COUNT_SQL = "SELECT count(*) FILTER (WHERE state = 'succeeded') FROM @schema@.task"
POLL_S = 0.005
# After the burn-down, the idle worker's own CPU (its threads polling,
# maintenance) is measured this long and taken out of the CPU per task.
IDLE_S = 1.0

# (label, handler style, worker threads, claim batch): in flight = threads x
# batch for async handlers, threads for sync ones.
SCENARIOS = [
    ("sync, 32 threads (32 in flight)", "sync", 32, 10),
    ("async, 32 in flight (32 threads x batch 1)", "async", 32, 1),
    ("async, 256 in flight (32 threads x batch 8)", "async", 32, 8),
    ("async, 32 in flight (4 threads x batch 8)", "async", 4, 8),
    ("async, 256 in flight (4 threads x batch 64)", "async", 4, 64),
]


@contextmanager
def fd2_discarded() -> Iterator[None]:
    """The worker logs to fd 2; keep the run's summary readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def registry_for(style: str, sleep_ms: int) -> Registry:
    registry = Registry()
    if style == "async":
        @registry.handler("bench.noop")
        async def noop_async(task: payq.TaskRun) -> None:
            if sleep_ms:
                await asyncio.sleep(sleep_ms / 1000)
            return None
    else:
        @registry.handler("bench.noop")
        def noop(task: payq.TaskRun) -> None:
            if sleep_ms:
                time.sleep(sleep_ms / 1000)
            return None
    return registry


def prefill(db: payq.Database, tasks: int) -> None:
    for sql in RESET_SQL:
        with db.transaction() as t:
            t.execute(sql)
    with db.transaction() as t:
        t.execute(PREFILL_SQL, [tasks])
    with db.transaction() as t:
        t.execute("ANALYZE @schema@.task")


def burn(db: payq.Database, label: str, style: str, threads: int, batch: int, tasks: int, sleep_ms: int,
         timeout_s: float) -> Dict[str, Any]:
    prefill(db, tasks)
    worker = payq.Worker(db, registry=registry_for(style, sleep_ms), concurrency=threads, batch=batch)
    loop_max_before = handler_loop().in_flight_max if style == "async" else 0
    timed_out = False
    with fd2_discarded():
        cpu_started = os.times()
        started = time.monotonic()
        worker.start()
        while worker.stats()["succeeded"] < tasks:  # bounded by timeout_s
            if time.monotonic() - started > timeout_s:
                timed_out = True
                break
            time.sleep(POLL_S)
        seconds = time.monotonic() - started
        cpu_ended = os.times()
        time.sleep(IDLE_S)
        cpu_idle_ended = os.times()
        worker.stop()
    stats = worker.stats()
    cpu_s = (cpu_ended.user - cpu_started.user) + (cpu_ended.system - cpu_started.system)
    idle_cpu_per_s = ((cpu_idle_ended.user - cpu_ended.user) + (cpu_idle_ended.system - cpu_ended.system)) / IDLE_S
    with db.transaction() as t:
        rows = int(t.execute(COUNT_SQL)[0][0] or 0)
    return {
        "scenario": label,
        "handler": style,
        "threads": threads,
        "claim_batch": batch,
        "in_flight_max_on_loop": max(handler_loop().in_flight_max, loop_max_before) if style == "async" else None,
        "per_s": round(stats["succeeded"] / seconds, 1) if seconds > 0 else 0.0,
        "cpu_us_per_task": round(cpu_s * 1e6 / max(stats["succeeded"], 1), 1),
        "cpu_us_per_task_net_of_idle": round(max(cpu_s - idle_cpu_per_s * seconds, 0.0) * 1e6
                                             / max(stats["succeeded"], 1), 1),
        "idle_cpu_ms_per_s": round(idle_cpu_per_s * 1000, 1),
        "seconds": round(seconds, 3),
        "timed_out": timed_out,
        "verified": rows == tasks,
    }


def run(dsn: str, schema: str, tasks: int, sleep_ms: int, timeout_s: float) -> Dict[str, Any]:
    db = payq.connect(dsn, schema=schema, migrate=True)
    with db.transaction() as t:
        [(fsync,)] = t.execute("SHOW fsync")
    results = []
    for label, style, threads, batch in SCENARIOS:
        row = burn(db, label, style, threads, batch, tasks, sleep_ms, timeout_s)
        print(f"[async_handlers] {label}: {row['per_s']}/s, {row['cpu_us_per_task']} us CPU per task "
              f"({row['cpu_us_per_task_net_of_idle']} us net of the idle worker's)"
              f"{' (TIMED OUT)' if row['timed_out'] else ''}", file=sys.stderr, flush=True)
        results.append(row)
    db.close()
    sync_rate = results[0]["per_s"] or 1.0
    return {
        "bench": "async_handlers",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "fsync": fsync,
        "tasks": tasks,
        "handler_sleep_ms": sleep_ms,
        "results": results,
        "ratio_to_sync": {r["scenario"]: round(r["per_s"] / sync_rate, 2) for r in results[1:]},
    }


@contextmanager
def durable_cluster() -> Iterator[str]:
    """A private server with fsync on, on disk (/dev/shm would make fsync free)."""
    home = tempfile.mkdtemp(prefix="payq-bench-", dir="/tmp")
    os.chmod(home, 0o755)
    server = EmbeddedServer(home, durable=True)
    server.remove_when_process_exits()
    try:
        yield server.up()
    finally:
        try:
            server.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", help="server to use (default: a private cluster, fsync on)")
    parser.add_argument("--schema", default="payq")
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--sleep-ms", type=int, default=0, help="each handler waits this long (0: a no-op)")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.dsn:
        doc = run(args.dsn, args.schema, args.tasks, args.sleep_ms, args.timeout_s)
    else:
        with durable_cluster() as dsn:
            doc = run(dsn, args.schema, args.tasks, args.sleep_ms, args.timeout_s)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
