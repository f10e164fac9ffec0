"""Helpers for testing code that uses payq: a throwaway PostgreSQL cluster
and fresh schemas. Also usable as a pytest plugin (see :mod:`payq.testing.pytest_plugin`)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from contextlib import contextmanager
import threading
from typing import Callable, Iterator

import payq
from payq.embedded import EmbeddedServer
from payq.testing.fake_provider import FakeProvider

__all__ = ["throwaway_cluster", "fresh_schema", "wait_until", "FakeProvider"]

_schema_counter = itertools.count()


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a private PostgreSQL cluster in a new temp directory and yield
    its DSN; stop and delete it afterwards, also after a failure, Ctrl-C, or
    (through a watchdog process) if this process is killed."""
    home = tempfile.mkdtemp(prefix="payq-test-", dir="/tmp")
    # As root the server runs as another user, who must reach the directory.
    os.chmod(home, 0o755)
    server = EmbeddedServer(home, durable=False)
    server.remove_when_process_exits()
    try:
        yield server.up()
    finally:
        try:
            server.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def fresh_schema(dsn: str, *, prefix: str = "t", migrate: bool = True) -> Iterator[payq.Database]:
    """A Database on a schema of its own (migrated unless ``migrate=False``),
    dropped afterwards."""
    schema = f"{prefix}_{os.getpid()}_{next(_schema_counter)}"
    db = payq.connect(dsn, schema=schema, migrate=migrate)
    try:
        yield db
    finally:
        with db.transaction() as t:
            t.execute("DROP SCHEMA IF EXISTS @schema@ CASCADE")


def wait_until(predicate: Callable[[], object], timeout_s: float = 30.0, *, interval_s: float = 0.05) -> bool:
    """Check ``predicate`` every ``interval_s`` until it holds (True) or
    ``timeout_s`` has passed (False): for tests that wait on a state another
    thread or process brings about, with a bound."""
    pause = threading.Event()
    for _ in range(max(1, int(timeout_s / interval_s))):
        if predicate():
            return True
        pause.wait(interval_s)
    return bool(predicate())
