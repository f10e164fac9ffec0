"""HTTP payouts per second: the built-in C++ HTTP handler against a Python
handler making the same calls with http.client, on one throwaway PostgreSQL
and one fake provider (payq.testing.FakeProvider, in a process of its own so
it never competes for this process's GIL), in one run. Prints one JSON
document.

Concurrency is the number of calls in flight at most: the built-in handler
gets it from two worker threads with half of it each as the claim batch (a
whole batch is in flight per thread); the Python handler from that many
worker threads, one call each, each thread keeping its own keep-alive
connection (as libcurl does).

Usage: bench/http [--payouts 2000] [--concurrency 8,64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from typing import Any, Dict, List, Tuple

import payq
from payq.testing import fresh_schema, throwaway_cluster
from payq.worker import Registry, Worker

TOKEN = "bench-token-0123456789"
BUILTIN_THREADS = 2
WAIT_S_MAX = 600.0
POLL_S = 0.01
AMOUNT_MINOR = 100

# The fake provider, tuned as a production server would be: TCP_NODELAY on
# its sockets (http.server writes the status line and headers, then the
# body, in two sends; with Nagle on, the body waits for the client's
# delayed ACK, about 40 ms, whenever the client reads from an event loop as
# libcurl does rather than blocking in recv), and a listen backlog that
# takes a burst of 64 new connections (socketserver's default is 5).
_PROVIDER_MAIN = """
import sys
from payq.testing import fake_provider
from payq.testing.fake_provider import FakeProvider
fake_provider._Handler.disable_nagle_algorithm = True
fake_provider._Server.request_queue_size = 256
with FakeProvider(token=sys.argv[1]) as provider:
    print(provider.url, flush=True)
    sys.stdin.read()   # runs until the parent closes stdin
"""


def provider_start() -> Tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", _PROVIDER_MAIN, TOKEN], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def provider_balance(url: str) -> int:
    request = urllib.request.Request(url + "/balance", headers={"Authorization": f"Bearer {TOKEN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return int(json.load(response)["balance_minor"])


def python_registry(url: str) -> Registry:
    """The same payout as the built-in kind, written as a Python handler."""
    host_port = url.split("://", 1)[1]
    local = threading.local()
    registry = Registry()

    @registry.handler("payout")
    def payout(task: payq.TaskRun) -> Any:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host_port, timeout=10)
        body = json.dumps(task.payload)
        try:
            connection.request("POST", "/payouts", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Idempotency-Key": task.idempotency_key,
                "Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:
            local.connection = None
            raise payq.Unknown(f"{type(exc).__name__}: {exc}") from None
        if response.status == 200 and answer.get("return_code") == "SUCCESS":
            return {"status": 200, "body": answer}
        raise payq.Unknown(f"HTTP {response.status}: {answer}")

    return registry


def builtin_registry(url: str) -> Registry:
    os.environ["PAYQ_BENCH_PROVIDER_TOKEN"] = TOKEN
    registry = Registry()
    registry.http("payout", url=url + "/payouts",
                  headers={"Authorization": payq.secret_env("PAYQ_BENCH_PROVIDER_TOKEN", prefix="Bearer ")},
                  timeout_ms=10_000, success_when={"return_code": "SUCCESS"})
    return registry


def burn_down(dsn: str, url: str, handler: str, concurrency: int, payouts: int, round_index: int) -> Dict[str, Any]:
    with fresh_schema(dsn, prefix="bench_http") as db:
        db.enqueue_many(payq.TaskRequest("payout", {"account": f"acct:{n}", "amount_minor": AMOUNT_MINOR,
                                                    "currency": "CNY"},
                                         idempotency_key=f"{handler}-{concurrency}-{round_index}-{n}")
                        for n in range(payouts))
        if handler == "builtin":
            registry = builtin_registry(url)
            threads, batch = BUILTIN_THREADS, max(1, concurrency // BUILTIN_THREADS)
        else:
            registry = python_registry(url)
            threads, batch = concurrency, 1
        balance_before = provider_balance(url)
        worker = Worker(db, registry=registry, concurrency=threads, batch=batch, listen=False,
                        poll_interval=timedelta(milliseconds=20), maintenance=False, log=False)
        started = time.perf_counter()
        worker.start()
        try:
            deadline = time.monotonic() + WAIT_S_MAX
            while db.tasks.stats().get("default", {}).get("succeeded", 0) < payouts:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{handler} at {concurrency}: not done in {WAIT_S_MAX:.0f} s")
                time.sleep(POLL_S)
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
        applied_minor = balance_before - provider_balance(url)
        stats = worker.stats()
        return {
            "handler": handler,
            "concurrency": concurrency,
            "worker_threads": threads,
            "claim_batch": batch,
            "payouts": payouts,
            "seconds": round(elapsed, 3),
            "payouts_per_s": round(payouts / elapsed, 1),
            "paid_exactly_once": applied_minor == payouts * AMOUNT_MINOR,
            "retried_or_unknown": stats["retried"] + stats["unknown"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payouts", type=int, default=2000)
    parser.add_argument("--concurrency", default="8,64")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: List[Dict[str, Any]] = []
    process, url = provider_start()
    try:
        with throwaway_cluster() as dsn:
            for round_index in range(args.rounds):
                for concurrency in levels:
                    for handler in ("builtin", "python"):
                        results.append(burn_down(dsn, url, handler, concurrency, args.payouts, round_index))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
    best: Dict[Tuple[str, int], float] = {}
    for r in results:
        key = (r["handler"], r["concurrency"])
        best[key] = max(best.get(key, 0.0), r["payouts_per_s"])
    print(json.dumps({
        "benchmark": "http_payouts",
        "conditions": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "python": platform.python_version(),
            "postgres": "throwaway cluster, fsync off, unix socket",
            "provider": "payq.testing.FakeProvider in its own process, HTTP/1.1 keep-alive, no faults",
            "payouts_per_run": args.payouts,
            "rounds": args.rounds,
        },
        "results": results,
        "builtin_over_python": {str(c): round(best[("builtin", c)] / best[("python", c)], 2) for c in levels},
    }, indent=2))


if __name__ == "__main__":
    main()
