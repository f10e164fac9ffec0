"""Connecting to payq's database and running transactions on it."""

from __future__ import annotations

import decimal
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Type, Union

from payq import _args
from payq._native import core
from payq.errors import ConfigError, ConnectionLost, Error, InvalidArgument, InvalidState

if TYPE_CHECKING:
    from payq.inbox import Inbox
    from payq.ledger import Ledger
    from payq.outbox import EnqueueResult, Queues, TaskRequest, Tasks

SqlValue = Union[None, bool, int, str, decimal.Decimal]

# The migration that creates the ledger (and its currency table).
_LEDGER_SCHEMA_VERSION = 2
Row = Tuple[Optional[str], ...]

__all__ = ["connect", "Database", "Transaction", "MigrateReport", "dsn_masked"]

# Schemas that hold other things than payq's: payq's tables go there only
# when the caller says so (connect(shared_schema=True)).
_SCHEMAS_SHARED = ("public",)

# Where a DSN carries a password: password=... (quoted or not) in the
# key=value form; user:password@ and ?password= in the URI form.
_DSN_URI = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_DSN_PASSWORD_KEYWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']\S*)", re.IGNORECASE)
_DSN_PASSWORD_USERINFO = re.compile(r"^([a-z]+://[^/@?#:]*:)([^/@?#]*)(@)", re.IGNORECASE)
_DSN_PASSWORD_QUERY = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_MASK = "****"
_PASSWORD_REPLACED_CHARS_MIN = 4


def dsn_masked(dsn: str) -> str:
    """``dsn`` with its password replaced by ``****``: the form to print or
    log. Both the ``key=value`` and the URI form are understood."""
    if _DSN_URI.match(dsn):
        masked = _DSN_PASSWORD_USERINFO.sub(lambda m: m.group(1) + _MASK + m.group(3), dsn)
        return _DSN_PASSWORD_QUERY.sub(lambda m: m.group(1) + _MASK, masked)
    return _DSN_PASSWORD_KEYWORD.sub(lambda m: m.group(1) + _MASK, dsn)


def _dsn_passwords(dsn: str) -> List[str]:
    """The password texts in ``dsn`` as they are written, quotes removed."""
    if _DSN_URI.match(dsn):
        found = [m.group(2) for m in _DSN_PASSWORD_USERINFO.finditer(dsn)]
        found += [m.group(2) for m in _DSN_PASSWORD_QUERY.finditer(dsn)]
    else:
        found = [m.group(2).strip("'") for m in _DSN_PASSWORD_KEYWORD.finditer(dsn)]
    return [p for p in found if p]


def _password_masked(error: Error, dsn: Optional[str]) -> Error:
    """``error``, or one of its class whose message no longer shows a
    password of ``dsn`` (libpq's parse errors may quote the DSN)."""
    message = str(error)
    masked = message
    for password in _dsn_passwords(dsn or ""):
        # A very short password would mask unrelated letters; the
        # password=... pattern below still hides it where it is quoted.
        if len(password) >= _PASSWORD_REPLACED_CHARS_MIN:
            masked = masked.replace(password, _MASK)
    masked = dsn_masked(masked)
    if masked == message:
        return error
    replacement = type(error)(masked)
    for name in ("sqlstate",):
        if hasattr(error, name):
            setattr(replacement, name, getattr(error, name))
    return replacement


@dataclass(frozen=True)
class MigrateReport:
    """What :meth:`Database.migrate` did."""

    applied: List[int]
    """Versions applied by this call, in order (empty when up to date)."""
    version_current: int
    """The schema's version afterwards."""


def _to_text(value: SqlValue) -> Optional[str]:
    # bool first: it is also an int.
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidArgument(f"SQL parameter {value!r} is not finite")
        return str(value)
    raise InvalidArgument(
        f"SQL parameter of type {type(value).__name__} is not supported; "
        "pass None, bool, int, str or Decimal (never float)"
    )


class Transaction:
    """One database transaction on a payq connection.

    Use it as a context manager: it commits when the block ends normally and
    rolls back when it raises. A transaction belongs to the thread that
    opened it.
    """

    def __init__(self, core_transaction: "core.Transaction", on_commit: Optional[Callable[[Set[str]], None]] = None
                 ) -> None:
        self._tx = core_transaction
        self._queues_touched: Set[str] = set()
        self._on_commit = on_commit

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if not self._tx.is_open:
            return
        if exc_type is None:
            self.commit()
            return
        try:
            self._tx.rollback()
        except ConnectionLost:
            # The connection died with the block's own error: the server
            # rolled back already, and that error is the one to see.
            pass

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> List[Row]:
        """Run one SQL statement with ``$1..$n`` parameters; ``@schema@``
        stands for payq's schema. Returns the rows, every value as text."""
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise InvalidArgument(f"params must be a sequence, not {type(params).__name__}")
        texts = [_args.text_or_none(_to_text(p), f"SQL parameter ${i}") for i, p in enumerate(params, 1)]
        _, rows = self._tx.execute(_args.text(sql, "sql"), texts)
        return rows

    @contextmanager
    def savepoint(self) -> Iterator["Transaction"]:
        """A nested transaction: if the block raises, everything done inside
        it is undone and the exception propagates, but this transaction stays
        usable, so the caller may catch the exception and go on."""
        self._tx.savepoint_begin()
        try:
            yield self
        except BaseException:
            self._tx.savepoint_rollback()
            raise
        else:
            self._tx.savepoint_release()

    def commit(self) -> None:
        """Commit now. Raises :class:`payq.CommitUnknown` if the outcome
        cannot be known (connection lost during COMMIT). After a commit that
        enqueued tasks, workers are woken (NOTIFY from outside the
        transaction, so no global lock sits in the commit path); a wake-up
        that fails is not raised, as workers also poll."""
        self._tx.commit()
        if self._queues_touched and self._on_commit is not None:
            try:
                self._on_commit(self._queues_touched)
            except Error:
                # The transaction is committed: an error here would tell the
                # caller otherwise (the server may have gone just after the
                # COMMIT, as in a failover). Workers find the tasks at their
                # next poll.
                pass

    def rollback(self) -> None:
        """Discard everything done in this transaction."""
        self._tx.rollback()

    def enqueue(self, kind: str, payload: Any = None, **options: Any) -> "EnqueueResult":
        """Enqueue a task in this transaction: if it rolls back, the task
        never existed. Options: ``queue``, ``priority``, ``delay``
        (timedelta), ``max_attempts``, ``timeout`` (timedelta),
        ``unique_key`` (a duplicate returns the existing task),
        ``partition_key`` (same key: never two at once), ``idempotency_key``
        (what the provider sees; default ``task:<id>``), ``amount``
        (payq.Money, for money limits), ``held`` (needs a release),
        ``settle`` (:class:`payq.Settle`)."""
        from payq.outbox import _enqueue_many, _request

        result = _enqueue_many(self._tx, [_request(kind, payload, options)])[0]
        self._queues_touched.add(options.get("queue", "default"))
        return result

    def enqueue_many(self, requests: "Iterable[TaskRequest]") -> "List[EnqueueResult]":
        """Enqueue many tasks at once: all checked first (a bad one names its
        index and nothing is written); 32 or more without unique keys go by
        COPY (see docs/outbox.md, "Enqueue options")."""
        from payq.outbox import _enqueue_many

        requests = list(requests)
        results = _enqueue_many(self._tx, requests)  # checks each request first
        self._queues_touched.update(r.queue for r in requests)
        return results

    @property
    def tasks(self) -> "Tasks":
        """Task reads and operator actions inside this transaction."""
        from payq.outbox import Tasks

        return Tasks(self._tx)

    @property
    def inbox(self) -> "Inbox":
        """Provider callbacks, settled inside this transaction."""
        from payq.inbox import Inbox

        return Inbox(self._tx)

    @property
    def ledger(self) -> "Ledger":
        """The ledger inside this transaction (savepoints included)."""
        from payq.ledger import Ledger

        return Ledger(self._tx)

    @property
    def is_open(self) -> bool:
        """False once committed or rolled back."""
        return bool(self._tx.is_open)

    @property
    def savepoint_depth(self) -> int:
        """How many savepoints are open."""
        return int(self._tx.savepoint_depth)


class Database:
    """A payq database: where it is, and a pool of payq's own connections.

    Thread-safe: each thread borrows its own connection from the pool.
    Obtain one with :func:`payq.connect`.
    """

    def __init__(self, core_database: "core.Database", reader: Optional["Database"] = None) -> None:
        self._core_open: Optional["core.Database"] = core_database
        self._reader = reader

    @property
    def _core(self) -> "core.Database":
        found = self._core_open
        if found is None:
            raise InvalidState("this payq.Database was closed: connect again (payq.connect) to use the database")
        return found

    def close(self) -> None:
        """Let go of the connection pool, and of the reader's: their idle
        connections close now, so that the database can be dropped or
        renamed (a test database at the end of a run). A connection still
        held closes when its holder is released: a :class:`Transaction`
        object (even a finished one keeps its connection until it is
        garbage), a :class:`payq.Worker`, a ``Ledger`` or ``Tasks`` object
        taken from this Database. Afterwards every use of this Database raises
        :class:`payq.InvalidState`. Idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        # The pool (C++) is destroyed with its last owner: this reference,
        # unless one of the users named above still holds it.
        self._core_open = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core_open is None

    @property
    def reader(self) -> "Database":
        """Where reads that may lag a little go (the dashboard, ``payq
        ledger history``, the audit): the standby of ``read_dsn`` (see
        :func:`connect`), else this database. Never write through it."""
        return self._reader if self._reader is not None else self

    def replication_lag(self) -> Optional[timedelta]:
        """How far :attr:`reader` trails the primary: None when it is the
        primary itself, zero when the standby has replayed all it received,
        else the age of the last transaction it replayed."""
        with self.reader.transaction() as t:
            [(lag,)] = t.execute(
                "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL "
                "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
                "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END")
        return None if lag is None else timedelta(seconds=float(lag))

    @property
    def dsn(self) -> str:
        """The libpq connection string in use."""
        return str(self._core.dsn)

    @property
    def pooler(self) -> str:
        """``"transaction"`` behind a transaction-mode pooler (see
        :func:`connect`), else ``"none"``."""
        return str(self._core.pooler)

    @property
    def listen_dsn(self) -> Optional[str]:
        """Where workers LISTEN for new tasks; None when they poll."""
        value = self._core.listen_dsn
        return None if value is None else str(value)

    @property
    def dsn_source(self) -> str:
        """Where the DSN came from: ``argument``, ``environment`` (PAYQ_DSN)
        or ``embedded`` (payq's private server)."""
        return str(self._core.dsn_source)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding every payq object."""
        return str(self._core.schema)

    def migrate(self) -> MigrateReport:
        """Apply the missing schema migrations, in order, in one transaction.
        Idempotent, and safe when several processes run it at once."""
        report = self._core.migrate()
        core.ledger_currencies_load(self._core)
        return MigrateReport(list(report.applied), int(report.version_current))

    def schema_version(self) -> int:
        """The highest applied migration; 0 if payq was never migrated here."""
        return int(self._core.schema_version())

    @property
    def ledger(self) -> "Ledger":
        """The ledger; each call runs in a payq transaction of its own,
        re-run on serialization failure or deadlock (bounded)."""
        from payq.ledger import Ledger

        return Ledger(self._core)

    def transaction(self) -> Transaction:
        """Begin a transaction: ``with db.transaction() as t: ...``."""
        return Transaction(self._core.begin(), self._notify)

    def notify(self, queues: Iterable[str]) -> None:
        """Wake workers serving ``queues`` now (NOTIFY on a connection of
        payq's, outside any caller transaction). payq does this itself
        after its own transactions commit; call it after committing tasks
        enqueued on the application's connection (for example from
        Django's ``transaction.on_commit``), or let workers find them at
        their next poll."""
        notify = getattr(core, "notify_queues", None)
        if notify is not None:
            notify(self._core, sorted(set(queues)))

    _notify = notify  # the transaction's after-commit hook

    def enqueue(self, kind: str, payload: Any = None, **options: Any) -> "EnqueueResult":
        """Enqueue a task in a transaction of its own (see
        :meth:`Transaction.enqueue` for the options)."""
        with self.transaction() as t:
            return t.enqueue(kind, payload, **options)

    def enqueue_many(self, requests: "Iterable[TaskRequest]") -> "List[EnqueueResult]":
        """Enqueue many tasks in one round trip, in a transaction of their own."""
        with self.transaction() as t:
            return t.enqueue_many(requests)

    @property
    def tasks(self) -> "Tasks":
        """Task reads and operator actions."""
        from payq.outbox import Tasks

        return Tasks(self._core)

    @property
    def queues(self) -> "Queues":
        """Queue settings: limits, pause, resume."""
        from payq.outbox import Queues

        return Queues(self._core)

    @property
    def inbox(self) -> "Inbox":
        """Provider callbacks: each event once, settling its task (see :mod:`payq.inbox`)."""
        from payq.inbox import Inbox

        return Inbox(self._core)

    def __repr__(self) -> str:
        if self.closed:
            return "<payq.Database closed>"
        return f"<payq.Database schema={self.schema!r} source={self.dsn_source}>"


def connect(
    dsn: Optional[str] = None,
    *,
    schema: str = "payq",
    migrate: Optional[bool] = None,
    prepare_statements: bool = True,
    shared_schema: bool = False,
    pooler: Optional[str] = None,
    listen_dsn: Optional[str] = None,
    read_dsn: Optional[str] = None,
) -> Database:
    """Open a payq database.

    ``dsn`` is a libpq connection string; a multi-host one
    (``host=a,b target_session_attrs=read-write``) follows a failover.
    Without it, ``PAYQ_DSN`` is used, and without that payq's embedded
    PostgreSQL server (started on demand under ``PAYQ_HOME``). ``migrate``
    applies missing migrations; by default it does so only on the embedded
    server, which payq owns.

    Behind a transaction-mode pooler (pgbouncer's ``pool_mode =
    transaction``) pass ``pooler="transaction"`` (or set
    ``PAYQ_POOLER=transaction``): payq then keeps nothing in a server
    session (no prepared statements), and workers LISTEN on ``listen_dsn``
    (``PAYQ_LISTEN_DSN``), a direct connection to the server, or without
    one poll every ``poll_interval``. Without the setting, the pooler's
    symptom (a prepared statement that exists twice or vanished) raises
    :class:`payq.ConfigError` naming it. See docs/deployment.md.
    ``prepare_statements=False`` alone turns off prepared statements only.

    ``read_dsn`` (``PAYQ_READ_DSN``) names a standby for reads that may lag
    a little: :attr:`Database.reader` serves the dashboard, ``payq ledger
    history`` and the audit from it, and :meth:`Database.replication_lag`
    says by how much it trails.

    payq's objects live in ``schema`` of their own. ``public``, where an
    application's tables usually are, is refused unless
    ``shared_schema=True`` says payq's tables may sit among them.

    Raises :class:`payq.ConfigError` for a malformed DSN or schema name (a
    control character in a DSN included) and :class:`payq.DatabaseError`
    when the server cannot be reached. No message shows the DSN's password.
    """
    try:
        arguments = (_args.text_or_none(dsn, "dsn"), _args.text(schema, "schema"),
                     _args.flag(prepare_statements, "prepare_statements"), _args.text_or_none(pooler, "pooler"),
                     _args.text_or_none(listen_dsn, "listen_dsn"))
        read_dsn = _args.text_or_none(read_dsn if read_dsn is not None else os.environ.get("PAYQ_READ_DSN") or None,
                                      "read_dsn")
        _args.flag(shared_schema, "shared_schema")
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None
    if schema in _SCHEMAS_SHARED and not shared_schema:
        raise ConfigError(f"schema {schema!r} holds the application's own tables; give payq a schema of its own "
                          "(the default is 'payq'), or pass shared_schema=True to put payq's tables there")
    try:
        core_database = core.Database(*arguments)
    except Error as exc:
        masked = _password_masked(exc, dsn if dsn is not None else os.environ.get("PAYQ_DSN"))
        if masked is exc and listen_dsn is not None:
            masked = _password_masked(exc, listen_dsn)
        if masked is exc:
            raise
        raise masked from None
    reader = None
    if read_dsn is not None:
        try:
            reader = Database(core.Database(read_dsn, schema, arguments[2], pooler, None))
        except Error as exc:
            masked = _password_masked(exc, read_dsn)
            if masked is exc:
                raise
            raise masked from None
    database = Database(core_database, reader)
    if migrate or (migrate is None and database.dsn_source == "embedded"):
        database.migrate()
    elif database.schema_version() >= _LEDGER_SCHEMA_VERSION:
        # Custom currencies defined by other processes, so that accounts
        # and amounts in them can be read here.
        core.ledger_currencies_load(database._core)
    return database
