"""payq through pgbouncer (transaction mode, ``pooler="transaction"``)
against payq straight to the server, on the same durable server (fsync on)
in one run: ledger transfers per second from several threads, and a queue
burn-down (no-op tasks drained by a worker). Target: pooled / direct >= 0.8
for both (issue 14). Prints JSON and writes it, with a short summary, under
bench/pooler/.

    python bench/pooler.py [--transfers 4000] [--tasks 4000] [--threads 8] [--rounds 3]

Each figure is the median of ``--rounds`` runs that alternate direct and
pooled, so drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List

import payq
from payq.embedded import EmbeddedServer
from payq.testing.pgbouncer import PgBouncer
from payq.worker import Registry, Worker

OUT_DIR = Path(__file__).resolve().parent / "pooler"
TARGET_RATIO = 0.8
DRAIN_WAIT_S = 300.0


def transfers_per_second(db: payq.Database, transfers: int, threads: int, tag: str) -> float:
    ledger = db.ledger
    world = ledger.account("world", "CNY", tag, allow_negative=True)
    wallets = [ledger.account(f"user:{i}", "CNY", tag) for i in range(threads)]
    for wallet in wallets:
        ledger.transfer(world, wallet, "100000.00", key=f"{tag}/fund/{wallet.id}")
    per_thread = transfers // threads

    def run(index: int) -> None:
        for n in range(per_thread):
            ledger.transfer(wallets[index], world, "0.01", key=f"{tag}/pay/{index}/{n}")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return per_thread * threads / (time.perf_counter() - started)


def tasks_per_second(db: payq.Database, tasks: int, threads: int, tag: str) -> float:
    queue = f"burn-{tag}"
    for start in range(0, tasks, 1000):
        db.enqueue_many([payq.TaskRequest("noop", {"n": n}, queue=queue) for n in range(start, min(tasks, start + 1000))])
    registry = Registry()
    registry.handler("noop")(lambda task: None)
    worker = Worker(db, queues=[queue], registry=registry, concurrency=threads, batch=16,
                    poll_interval=timedelta(milliseconds=20), maintenance=False, log=False)
    started = time.perf_counter()
    worker.start()
    try:
        deadline = time.monotonic() + DRAIN_WAIT_S
        while time.monotonic() < deadline and db.tasks.stats().get(queue, {}).get("succeeded", 0) < tasks:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    return tasks / elapsed


def median_pair(rounds: int, direct: Callable[[int], float], pooled: Callable[[int], float]) -> Dict[str, object]:
    direct_rates: List[float] = []
    pooled_rates: List[float] = []
    for n in range(rounds):
        direct_rates.append(direct(n))
        pooled_rates.append(pooled(n))
    d, p = statistics.median(direct_rates), statistics.median(pooled_rates)
    return {"direct_per_s": round(d), "pooled_per_s": round(p), "ratio": round(p / d, 3),
            "rounds_direct": [round(r) for r in direct_rates], "rounds_pooled": [round(r) for r in pooled_rates],
            "target": TARGET_RATIO, "met": p / d >= TARGET_RATIO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=4000)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="payq-bench-pooler-", dir="/tmp")
    os.chmod(base, 0o755)
    server = EmbeddedServer(os.path.join(base, "home"), durable=True)
    server.remove_when_process_exits()
    dsn = server.up()
    try:
        with PgBouncer(dsn, pool_mode="transaction", pool_size=args.threads) as bouncer:
            direct = payq.connect(dsn, schema="bench", migrate=True)
            pooled = payq.connect(bouncer.dsn, schema="bench", pooler="transaction", listen_dsn=dsn)
            ledger = median_pair(args.rounds,
                                 lambda n: transfers_per_second(direct, args.transfers, args.threads, f"d{n}"),
                                 lambda n: transfers_per_second(pooled, args.transfers, args.threads, f"p{n}"))
            queue = median_pair(args.rounds,
                                lambda n: tasks_per_second(direct, args.tasks, args.threads, f"d{n}"),
                                lambda n: tasks_per_second(pooled, args.tasks, args.threads, f"p{n}"))
    finally:
        server.down()
        shutil.rmtree(base, ignore_errors=True)

    result = {
        "bench": "pooler",
        "conditions": {"machine": platform.machine(), "cpus": os.cpu_count(), "fsync": "on",
                       "pgbouncer_pool_mode": "transaction", "pool_size": args.threads, "threads": args.threads,
                       "transfers": args.transfers, "tasks": args.tasks, "rounds": args.rounds,
                       "worker": "Python no-op handler, batch 16, per-task completion"},
        "ledger_transfers": ledger,
        "queue_burn_down": queue,
    }
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = (f"payq through pgbouncer (transaction mode) vs direct, fsync on, {args.threads} threads, "
               f"median of {args.rounds}:\n"
               f"  ledger transfers/s: direct {ledger['direct_per_s']}, pooled {ledger['pooled_per_s']}, "
               f"ratio {ledger['ratio']} (target >= {TARGET_RATIO})\n"
               f"  queue burn-down tasks/s: direct {queue['direct_per_s']}, pooled {queue['pooled_per_s']}, "
               f"ratio {queue['ratio']} (target >= {TARGET_RATIO})\n")
    (OUT_DIR / "summary.txt").write_text(summary)
    print(json.dumps(result, indent=2))
    print(summary)


if __name__ == "__main__":
    main()
