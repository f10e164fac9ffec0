"""Helpers for testing code that uses payq: a throwaway PostgreSQL cluster,
fresh databases and schemas, and a bounded wait. Also usable as a pytest
plugin (see :mod:`payq.testing.pytest_plugin`)."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import payq
from payq.embedded import EmbeddedServer, postgres_bin_dir
from payq.testing.fake_provider import FakeProvider

__all__ = ["throwaway_cluster", "fresh_schema", "fresh_database", "wait_until", "WaitTimeout", "FakeProvider",
           "DATABASE_SCHEMA", "FAILED_LOGS_DIR"]

T = TypeVar("T")

#: The schema payq lives in inside each database that
#: :func:`fresh_database` hands out.
DATABASE_SCHEMA = "payq_test"
#: Where a throwaway cluster's server log is kept when asked to
#: (``keep_log_if``): the pytest plugin does so when tests failed.
FAILED_LOGS_DIR = "/tmp/payq-test-logs"
# A bound on one administrative psql call (CREATE/DROP DATABASE).
_ADMIN_TIMEOUT_S = 120.0
# Free space /dev/shm needs to hold a throwaway cluster.
_THROWAWAY_ROOM_MIN_BYTES = 2 << 30

_schema_counter = itertools.count()
_database_counter = itertools.count()
# Per cluster DSN, for fresh_database.
_copies: Dict[str, "_DatabaseCopies"] = {}
_copies_lock = threading.Lock()


def _throwaway_base() -> str:
    """/dev/shm when it has room, else /tmp. In memory, CREATE DATABASE and
    migrations do not queue behind other disk writers (measured on a busy
    2-core VM: a template copy in 15-20 ms there, 360-460 ms in /tmp)."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return "/tmp"
    if os.access("/dev/shm", os.W_OK) and shm.f_bavail * shm.f_frsize >= _THROWAWAY_ROOM_MIN_BYTES:
        return "/dev/shm"
    return "/tmp"


@contextmanager
def throwaway_cluster(*, keep_log_if: Optional[Callable[[], bool]] = None) -> Iterator[str]:
    """Start a private PostgreSQL cluster in a new temp directory (in
    /dev/shm when it has room, else /tmp) and yield its DSN; stop and delete
    it afterwards, also after a failure, Ctrl-C, or (through a watchdog
    process) if this process is killed.

    When ``keep_log_if()`` holds at the end (tests failed, say), the
    server's log is first copied to ``/tmp/payq-test-logs/server-<pid>.log``
    (:data:`FAILED_LOGS_DIR`)."""
    home = tempfile.mkdtemp(prefix="payq-test-", dir=_throwaway_base())
    # As root the server runs as another user, who must reach the directory.
    os.chmod(home, 0o755)
    server = EmbeddedServer(home, durable=False)
    server.remove_when_process_exits()
    try:
        yield server.up()
    finally:
        try:
            server.down()
            if keep_log_if is not None and keep_log_if():
                os.makedirs(FAILED_LOGS_DIR, exist_ok=True)
                shutil.copyfile(os.path.join(home, "log", "server.log"),
                                os.path.join(FAILED_LOGS_DIR, f"server-{os.getpid()}.log"))
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


def _psql() -> Optional[str]:
    """The psql beside the server binaries, else on PATH; None if neither."""
    try:
        beside = os.path.join(postgres_bin_dir(), "psql")
    except payq.ConfigError:
        beside = ""
    if beside and os.access(beside, os.X_OK):
        return beside
    return shutil.which("psql")


def _admin_sql(psql: str, dsn: str, *statements: str) -> str:
    """Run ``statements``, each in a transaction of its own (CREATE DATABASE
    cannot run inside one), and return the output; raises
    :class:`payq.DatabaseError` with psql's message."""
    command = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for statement in statements:
        command += ["-c", statement]
    result = subprocess.run(command, capture_output=True, text=True, timeout=_ADMIN_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise payq.DatabaseError(f"{'; '.join(statements)}: {result.stderr.strip()}")
    return result.stdout.strip()


def _dsn_with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` naming database ``dbname``: a later keyword wins in libpq, and
    a URI takes it as a query parameter."""
    if dsn.startswith(("postgres://", "postgresql://")):
        return dsn + ("&" if "?" in dsn else "?") + f"dbname={dbname}"
    return f"{dsn} dbname={dbname}"


def _template_name() -> str:
    """A name that changes with payq's version and its migrations, so that a
    server that outlives a test run never hands out a stale copy."""
    from payq._native import core

    fingerprint = hashlib.sha256(repr((payq.__version__, core.migrations_known())).encode()).hexdigest()[:16]
    return f"payq_template_{fingerprint}"


class _DatabaseCopies:
    """Databases copied from one cluster's migrated template, for
    :func:`fresh_database` and the ``payq_db`` fixture.

    Raises :class:`payq.ConfigError` without psql, and
    :class:`payq.DatabaseError` when the server refuses (a role without
    CREATEDB)."""

    def __init__(self, dsn: str) -> None:
        psql = _psql()
        if psql is None:
            raise payq.ConfigError("copies of a template database need psql (apt-get install postgresql-client)")
        self._psql = psql
        self._dsn = dsn
        self._lock = threading.Lock()
        self._dropping: List[str] = []
        version = int(_admin_sql(psql, dsn, "SHOW server_version_num"))
        # FILE_COPY copies the template's files; PostgreSQL 15's default
        # WAL_LOG writes every page to the WAL, several times slower for a
        # template this small. Older servers copy files anyway.
        self._strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
        # FORCE (13 and later) ends sessions a test left open.
        self._force = " WITH (FORCE)" if version >= 130000 else ""
        self._template = self._template_ensure()

    def _template_ensure(self) -> str:
        """The template database, made if missing. Another process may race
        to make it: each builds one under a name of its own, and only the
        first rename to the shared name wins."""
        name = _template_name()
        exists = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        if _admin_sql(self._psql, self._dsn, exists) != "0":
            return name
        building = f"{name}_{os.getpid()}"
        _admin_sql(self._psql, self._dsn, f'DROP DATABASE IF EXISTS "{building}"', f'CREATE DATABASE "{building}"')
        payq.connect(_dsn_with_dbname(self._dsn, building), schema=DATABASE_SCHEMA, migrate=True).close()
        # Nobody may connect to a template: CREATE DATABASE ... TEMPLATE
        # refuses one that has a session.
        _admin_sql(self._psql, self._dsn, f'ALTER DATABASE "{building}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        try:
            _admin_sql(self._psql, self._dsn, f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        except payq.DatabaseError:
            if _admin_sql(self._psql, self._dsn, exists) == "0":
                raise
            _admin_sql(self._psql, self._dsn, f'ALTER DATABASE "{building}" WITH IS_TEMPLATE false',
                       f'DROP DATABASE "{building}"')
        return name

    def take(self) -> Tuple[str, payq.Database]:
        """A new copy: its name, and a Database on it (schema
        :data:`DATABASE_SCHEMA`). Copies given back earlier are dropped
        first, in the same psql call."""
        with self._lock:
            dropping, self._dropping = self._dropping, []
        name = f"payq_t_{os.getpid()}_{next(_database_counter)}"
        statements = [f'DROP DATABASE IF EXISTS "{old}"{self._force}' for old in dropping]
        statements.append(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"{self._strategy}')
        _admin_sql(self._psql, self._dsn, *statements)
        try:
            # migrate=True checks the copy against this payq's migrations (a
            # no-op when they match) and refuses a stale one.
            return name, payq.connect(_dsn_with_dbname(self._dsn, name), schema=DATABASE_SCHEMA, migrate=True)
        except payq.Error:
            with self._lock:
                self._dropping.append(name)
            raise

    def give_back(self, name: str, db: payq.Database, *, drop_now: bool) -> None:
        """Close ``db`` and drop its database, now or with the next
        :meth:`take` or :meth:`close`. Later is cheaper for a test: by then
        the objects that still hold connections to it are gone, and DROP
        DATABASE need not wait for their sessions to end."""
        db.close()
        if drop_now:
            _admin_sql(self._psql, self._dsn, f'DROP DATABASE IF EXISTS "{name}"{self._force}')
            return
        with self._lock:
            self._dropping.append(name)

    def close(self) -> None:
        """Drop every copy given back and not dropped yet."""
        with self._lock:
            dropping, self._dropping = self._dropping, []
        if dropping:
            _admin_sql(self._psql, self._dsn, *[f'DROP DATABASE IF EXISTS "{old}"{self._force}' for old in dropping])


@contextmanager
def fresh_database(dsn: str) -> Iterator[payq.Database]:
    """A Database on a database of its own in ``dsn``'s cluster, copied from
    a template migrated once per cluster (much cheaper than migrating a
    schema), dropped afterwards. payq's objects are in schema
    :data:`DATABASE_SCHEMA`; the copy's DSN is the Database's ``dsn``.

    Runs ``psql`` for CREATE and DROP DATABASE, and needs a role that may
    create databases: raises :class:`payq.ConfigError` if psql is missing
    and :class:`payq.DatabaseError` if the server refuses.
    """
    with _copies_lock:
        copies = _copies.get(dsn)
        if copies is None:
            copies = _copies[dsn] = _DatabaseCopies(dsn)
    name, db = copies.take()
    try:
        yield db
    finally:
        copies.give_back(name, db, drop_now=True)


class WaitTimeout(AssertionError):
    """:func:`wait_until` gave up: what it waited for did not happen in time.
    An AssertionError, so a test that meets it fails rather than errors."""


def wait_until(
    condition: Callable[[], T],
    timeout_s: float = 30.0,
    *,
    interval_s: float = 0.05,
    what: Optional[str] = None,
    diagnostics: Optional[Callable[[], str]] = None,
) -> T:
    """Check ``condition`` every ``interval_s`` until it returns something
    true, and return that value: for tests that wait on a state another
    thread or process brings about, with a bound.

    After ``timeout_s`` it returns the last (false) value; when ``what``
    names what is awaited it raises :class:`WaitTimeout` instead, its message
    followed by ``diagnostics()`` (logs, say). Raises
    :class:`payq.InvalidArgument` unless both times are positive and finite.
    """
    for name, seconds in (("timeout_s", timeout_s), ("interval_s", interval_s)):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds <= 0:
            raise payq.InvalidArgument(f"{name} must be a positive number of seconds, not {seconds!r}")
    # An Event's wait is a sleep that no signal handler can cut short.
    pause = threading.Event()
    for _ in range(max(1, math.ceil(timeout_s / interval_s))):
        value = condition()
        if value:
            return value
        pause.wait(interval_s)
    value = condition()
    if value or what is None:
        return value
    message = f"timed out after {timeout_s:g} s waiting for {what}"
    if diagnostics is not None:
        message += "\n" + diagnostics()
    raise WaitTimeout(message)
