"""How much the application-connection executor costs against payq's own
libpqxx connection, for one trivial statement, on the same server in the same
run. Prints JSON.

    python bench/appconn.py [--statements 20000] [--rounds 3]

Every figure is a statement sent through payq's Executor interface the way
core code sends it (``_core._executor_exec``: parameters as text, GIL
released, rows back as text), except ``*_driver_alone``, which is the driver's
own ``cursor.execute`` + ``fetchall`` from Python, for scale. Each round runs
all statements inside one transaction; the best round counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict

import psycopg
import psycopg2

import payq
from payq._native import core
from payq.appconn import app_executor
from payq.testing import throwaway_cluster

SQL = "SELECT $1::bigint AS n"
WARMUP_STATEMENTS = 500


def best_rate(run_once: Callable[[], object], statements: int, rounds: int) -> Dict[str, float]:
    for _ in range(WARMUP_STATEMENTS):
        run_once()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(statements):
            run_once()
        best = min(best, time.perf_counter() - started)
    return {"statements_per_second": round(statements / best), "us_per_statement": round(best / statements * 1e6, 1)}


def through_executor(executor: Any) -> Callable[[], None]:
    def run_once() -> None:
        core._executor_exec(executor, SQL, ["42"])

    return run_once


def through_driver(cursor: Any) -> Callable[[], None]:
    def run_once() -> None:
        cursor.execute("SELECT %s::bigint AS n", ("42",))
        cursor.fetchall()

    return run_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    results: Dict[str, Dict[str, float]] = {}
    with throwaway_cluster() as dsn:
        db = payq.connect(dsn, migrate=False)
        with db.transaction() as own:
            results["payq_own_transaction_execute"] = best_rate(
                lambda: own.execute(SQL, [42]), args.statements, args.rounds
            )
            results["payq_own_executor_prepared"] = best_rate(
                through_executor(own._tx), args.statements, args.rounds
            )

        with psycopg2.connect(dsn) as connection:
            results["app_executor_psycopg2"] = best_rate(
                through_executor(app_executor(connection)), args.statements, args.rounds
            )
            results["psycopg2_driver_alone"] = best_rate(
                through_driver(connection.cursor()), args.statements, args.rounds
            )
            connection.rollback()

        with psycopg.connect(dsn) as connection:
            results["app_executor_psycopg3"] = best_rate(
                through_executor(app_executor(connection)), args.statements, args.rounds
            )
            results["psycopg3_driver_alone"] = best_rate(
                through_driver(connection.cursor()), args.statements, args.rounds
            )
            connection.rollback()

        with psycopg.connect(dsn) as connection:
            server_version = connection.info.server_version

    conditions = {
        "statement": SQL,
        "statements_per_round": args.statements,
        "rounds": args.rounds,
        "server": f"PostgreSQL {server_version // 10000}.{server_version % 10000}, "
        "throwaway local cluster on a unix socket, fsync off",
        "python": platform.python_version(),
        "psycopg2": psycopg2.__version__.split()[0],
        "psycopg": psycopg.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    json.dump({"conditions": conditions, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
