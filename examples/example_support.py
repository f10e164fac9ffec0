"""What every example shares: its command line and its invariant checks.

Each example is run as ``python examples/<name>.py`` (this directory is then
on ``sys.path``), with ``--dsn`` (default: ``PAYQ_DSN``, else payq's embedded
server), ``--schema`` and ``--run-id``. Exit status: 0 when every invariant
holds, 1 when one is broken, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Callable, List, Optional, Sequence

import payq

__all__ = ["Invariants", "WAIT_S_MAX", "wait_until", "example_parser", "connect", "example_main"]

# How long an example waits for its workers before it calls the run failed.
WAIT_S_MAX = 60.0


class Invariants:
    """Collects broken invariants; the program exits 1 if there is one."""

    def __init__(self) -> None:
        self.broken: List[str] = []

    def check(self, holds: bool, what: str) -> None:
        print(f"  [{'ok' if holds else 'BROKEN'}] {what}")
        if not holds:
            self.broken.append(what)

    def exit_status(self, ok_message: str) -> int:
        """Say how it went; 0 if every invariant held, else 1."""
        if self.broken:
            print(f"FAILED: {len(self.broken)} invariant(s) broken")
            return 1
        print(f"OK: {ok_message}")
        return 0


def wait_until(predicate: Callable[[], bool], what: str) -> bool:
    """Poll ``predicate`` until it holds (True) or WAIT_S_MAX passes (False)."""
    deadline = time.monotonic() + WAIT_S_MAX
    while not predicate():
        if time.monotonic() > deadline:
            print(f"    gave up waiting for {what}")
            return False
        time.sleep(0.05)
    return True


def example_parser(description: str, run_id_help: str) -> argparse.ArgumentParser:
    """The options every example takes; an example may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dsn", help="libpq DSN (default: PAYQ_DSN, else payq's embedded server)")
    parser.add_argument("--schema", default="payq", help="schema holding payq's tables (default: payq)")
    parser.add_argument("--run-id", default=None, help=run_id_help)
    return parser


def connect(args: argparse.Namespace) -> payq.Database:
    """The example's database, migrated, as the options say."""
    db = payq.connect(args.dsn, schema=args.schema, migrate=True)
    print(f"payq database: {db.dsn_source}, schema {db.schema!r}")
    return db


def example_main(description: str, run_id_help: str, run: Callable[[payq.Database, str], int],
                 argv: Optional[Sequence[str]] = None) -> int:
    """Parse the common options, connect, and ``run(db, run_id)``."""
    args = example_parser(description, run_id_help).parse_args(argv)
    return run(connect(args), args.run_id or secrets.token_hex(4))
