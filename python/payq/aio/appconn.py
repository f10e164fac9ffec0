"""payq on the application's own async connection.

``t = await payq.aio.app_executor(conn)`` lets payq's ledger and queue
writes join the transaction the application holds on an asyncio driver:
psycopg 3's ``AsyncConnection``, asyncpg's ``Connection``, or SQLAlchemy's
``AsyncConnection``/``AsyncSession`` on either. One ``async with
conn.transaction()`` (or ``session.begin()``) then covers the application's
rows, the ledger postings and the enqueued tasks; a rollback drops all three.

How: payq's operations are C++ (the application executor of
:mod:`payq.appconn`, ``cpp/appconn/``) and blocking, so each one runs on a
thread of a small bounded pool. Every statement it sends is handed back to
the application's event loop (``asyncio.run_coroutine_threadsafe``) and run
there on the driver's own coroutine API; the thread waits for the rows. The
application's connection is therefore only ever used on its own loop, and
the loop is never blocked. The application owns commit and rollback, as
with the synchronous executor.

asyncpg takes ``$n`` parameters with binary, typed values. payq's values
are PostgreSQL text, as libpq's text format sends them, so each statement
is described once per connection and its parameters are cast from text to
the types the server inferred (``$1::text::bigint``): the server's own input
functions parse them, exactly as for libpq.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from contextlib import asynccontextmanager
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Coroutine, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

from payq._native import core
from payq.aio.offload import THREADS_DEFAULT, Offload, Serial
from payq.aio.views import Inbox, Ledger, Tasks
from payq.errors import ConnectionLost, InvalidArgument, InvalidState

if TYPE_CHECKING:
    from payq.outbox import EnqueueResult, TaskRequest

__all__ = ["AppTransaction", "app_executor"]

# How long payq's thread waits for the loop to run one statement: a loop
# that has stopped would otherwise hold the thread for ever.
_STATEMENT_WAIT_S_MAX = 600.0
# Statements described for asyncpg; payq sends a few dozen kinds.
_ASYNCPG_STATEMENT_COUNT_MAX = 512

Description = Optional[List[Tuple[str, int]]]
Rows = List[Tuple[Any, ...]]
Runner = Callable[[str, Optional[Sequence[Optional[str]]]], Coroutine[Any, Any, Tuple[Description, Rows]]]


def _module(name: str) -> Any:
    # A driver that was never imported cannot have made the object we were
    # given, so the drivers are looked up, never imported, here.
    return sys.modules.get(name)


class _LoopCursor:
    """The DB-API cursor payq's C++ executor drives (from a pool thread):
    each statement runs as a coroutine on the application's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run: Runner) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._run = run
        self.description: Description = None
        self._rows: Rows = []

    def execute(self, sql: str, params: Optional[Sequence[Optional[str]]] = None) -> None:
        if threading.get_ident() == self._loop_thread:
            # Waiting here for the loop would wait for ever: the loop is us.
            raise InvalidState("payq.aio's executor was called on the event loop's own thread; await its "
                               "methods instead")
        future: "Future[Tuple[Description, Rows]]" = asyncio.run_coroutine_threadsafe(self._run(sql, params),
                                                                                   self._loop)
        try:
            self.description, self._rows = future.result(_STATEMENT_WAIT_S_MAX)
        except FutureTimeout:
            future.cancel()
            raise ConnectionLost(f"the application's event loop did not run payq's statement within "
                                 f"{_STATEMENT_WAIT_S_MAX:.0f} s") from None

    def fetchall(self) -> Rows:
        rows, self._rows = self._rows, []
        return rows


# ---------------------------------------------------------------- psycopg 3


def _psycopg_runner(connection: Any) -> Runner:
    from psycopg.rows import tuple_row

    async def run(sql: str, params: Optional[Sequence[Optional[str]]]) -> Tuple[Description, Rows]:
        # The application's row factory stays on its own cursors.
        async with connection.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(sql, params)
            if cursor.description is None:
                return None, []
            description = [(c.name, c.type_code) for c in cursor.description]
            return description, list(await cursor.fetchall())

    return run


def _psycopg_check(connection: Any) -> None:
    # Not idle (0): a transaction block is open, as inside `async with
    # conn.transaction()` on an autocommit connection.
    if connection.autocommit and connection.info.transaction_status == 0:
        raise InvalidArgument(
            "this psycopg AsyncConnection is in autocommit mode outside a transaction: payq's operations would "
            "not be atomic. Open one first (`async with conn.transaction():`, or autocommit off)")


# ---------------------------------------------------------------- asyncpg

# %s placeholders (and %% for a percent sign) as the C++ executor writes a
# statement for DB-API drivers.
_FORMAT_TOKEN = re.compile(r"%%|%s")


def _dollar_sql(sql: str, cast_to: Optional[Sequence[str]] = None) -> str:
    """``sql`` with its n-th ``%s`` as ``$n`` (cast from text when
    ``cast_to`` names the types) and ``%%`` as ``%``."""
    count = 0

    def replace(match: "re.Match[str]") -> str:
        nonlocal count
        if match.group(0) == "%%":
            return "%"
        count += 1
        if cast_to is None:
            return f"${count}"
        return f"(${count}::text::{cast_to[count - 1]})"

    return _FORMAT_TOKEN.sub(replace, sql)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _type_name(parameter_type: Any) -> str:
    """An asyncpg parameter type as SQL: schema-qualified, quoted; asyncpg
    names an array type by its element's name and ``[]``."""
    name, dimensions = parameter_type.name, ""
    while name.endswith("[]"):
        name, dimensions = name[:-2], dimensions + "[]"
    return f"{_quoted(parameter_type.schema)}.{_quoted(name)}{dimensions}"


# payq's statements as asyncpg runs them: the SQL with text parameters cast
# to the types the server inferred, and the result's columns. Keyed by
# payq's SQL (its schema already named in it), the same on every connection;
# asyncpg itself prepares each once per connection and keeps it across pool
# releases (its own statement cache).
_asyncpg_described: Dict[str, Tuple[str, Description]] = {}


async def _asyncpg_describe(connection: Any, sql: str, with_params: bool) -> Tuple[str, Description]:
    """``sql`` as asyncpg runs it, and its columns (None: no rows)."""
    found = _asyncpg_described.get(sql)
    if found is not None:
        return found
    typed_sql = sql
    if with_params:
        probe = await connection.prepare(_dollar_sql(sql))
        typed_sql = _dollar_sql(sql, [_type_name(t) for t in probe.get_parameters()])
    attributes = (await connection.prepare(typed_sql)).get_attributes()
    described = (typed_sql, [(a.name, a.type.oid) for a in attributes] if attributes else None)
    if len(_asyncpg_described) >= _ASYNCPG_STATEMENT_COUNT_MAX:
        _asyncpg_described.clear()
    _asyncpg_described[sql] = described
    return described


def _asyncpg_runner(connection: Any) -> Runner:
    async def run(sql: str, params: Optional[Sequence[Optional[str]]]) -> Tuple[Description, Rows]:
        typed_sql, description = await _asyncpg_describe(connection, sql, params is not None)
        records = await connection.fetch(typed_sql, *(params or ()))
        if description is None:
            return None, []
        return description, [tuple(r) for r in records]

    return run


def _asyncpg_check(connection: Any) -> None:
    if not connection.is_in_transaction():
        raise InvalidArgument(
            "this asyncpg Connection is outside a transaction: payq's operations would not be atomic. "
            "Open one first (`async with conn.transaction():`)")


# ---------------------------------------------------------------- choosing


async def _sqlalchemy_driver_connection(connection: Any) -> Any:
    """The driver's connection under an SQLAlchemy AsyncConnection, inside
    the transaction SQLAlchemy will commit."""
    if connection.dialect.name != "postgresql":
        raise InvalidArgument(f"payq needs PostgreSQL; this SQLAlchemy connection is {connection.dialect.name}")
    if not connection.in_transaction():
        # What autobegin does on the first execute: the work belongs to the
        # transaction the application commits with connection.commit().
        await connection.begin()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    asyncpg = _module("asyncpg")
    if asyncpg is not None and isinstance(driver, asyncpg.Connection) and not driver.is_in_transaction():
        # SQLAlchemy's asyncpg dialect sends BEGIN with its first statement:
        # one statement through SQLAlchemy opens the transaction it commits.
        await connection.exec_driver_sql("SELECT 1")
    return driver


async def _runner_for(connection: Any) -> Runner:
    sqlalchemy = _module("sqlalchemy.ext.asyncio")
    if sqlalchemy is not None:
        if isinstance(connection, (sqlalchemy.AsyncSession, sqlalchemy.async_scoped_session)):
            # The connection of the session's transaction (begun if needed).
            connection = await connection.connection()
        if isinstance(connection, sqlalchemy.AsyncConnection):
            connection = await _sqlalchemy_driver_connection(connection)
    psycopg = _module("psycopg")
    if psycopg is not None:
        if isinstance(connection, psycopg.AsyncConnection):
            _psycopg_check(connection)
            return _psycopg_runner(connection)
        if isinstance(connection, psycopg.Connection):
            raise InvalidArgument("this psycopg Connection is synchronous: use payq.app_executor (payq.appconn)")
    asyncpg = _module("asyncpg")
    if asyncpg is not None and isinstance(connection, asyncpg.Connection):
        _asyncpg_check(connection)
        return _asyncpg_runner(connection)
    raise InvalidArgument(
        f"cannot run payq.aio on a {type(connection).__module__}.{type(connection).__qualname__}: pass a psycopg "
        "AsyncConnection, an asyncpg Connection, or an SQLAlchemy AsyncConnection or AsyncSession "
        "(a synchronous connection goes to payq.app_executor)")


# ---------------------------------------------------------------- the executor

_shared_offload: Optional[Offload] = None
_shared_offload_lock = threading.Lock()


def _offload_shared() -> Offload:
    """The pool app executors run payq's operations on, one per process."""
    global _shared_offload
    with _shared_offload_lock:
        if _shared_offload is None or _shared_offload._pid != os.getpid():
            _shared_offload = Offload(THREADS_DEFAULT, name="payq-aio-app")
        return _shared_offload


class AppTransaction:
    """payq inside the application's async transaction: the ledger, enqueue
    and task reads of :class:`payq.aio.Transaction`, sent on the
    application's connection. The application commits or rolls back."""

    def __init__(self, executor: "core.AppExecutor", offload: Offload) -> None:
        self._executor = executor
        self._serial = Serial(offload)

    @property
    def executor(self) -> "core.AppExecutor":
        """The synchronous executor underneath; usable only from a thread
        other than the event loop's (payq's pool threads use it)."""
        return self._executor

    async def enqueue(self, kind: str, payload: Any = None, **options: Any) -> "EnqueueResult":
        """Awaitable :meth:`payq.Transaction.enqueue`, in the application's
        transaction. Wake workers after the commit with
        :meth:`payq.aio.Database.notify`, or let them poll."""
        from payq.outbox import _enqueue_many, _request

        request = _request(kind, payload, options)  # checked here, before anything is sent
        results = await self._serial.call(_enqueue_many, self._executor, [request])
        return results[0]

    async def enqueue_many(self, requests: "Iterable[TaskRequest]") -> "List[EnqueueResult]":
        """Awaitable :meth:`payq.Transaction.enqueue_many`, in the
        application's transaction."""
        from payq.outbox import _enqueue_many

        return await self._serial.call(_enqueue_many, self._executor, list(requests))

    async def task_complete(self, task: Any, result: Any = None) -> None:
        """Record the success of the attempt ``task`` (an async handler's
        :class:`payq.TaskRun`) in the application's transaction, with the
        application's own writes: fenced by the attempt's lease
        (:class:`payq.LeaseLost` otherwise; roll back then)."""
        await self._serial.call(task.complete, self._executor, result)

    @property
    def ledger(self) -> Ledger:
        """The ledger in the application's transaction, awaitable."""
        from payq.ledger import Ledger as SyncLedger

        return Ledger(SyncLedger(self._executor), self._serial.call)

    @property
    def tasks(self) -> Tasks:
        """Task reads and operator actions in the application's transaction."""
        from payq.outbox import Tasks as SyncTasks

        return Tasks(SyncTasks(self._executor), self._serial.call)

    @property
    def inbox(self) -> Inbox:
        """Provider callbacks settled in the application's transaction."""
        from payq.inbox import Inbox as SyncInbox

        return Inbox(SyncInbox(self._executor), self._serial.call)

    async def execute(self, sql: str, params: Sequence[Optional[str]] = ()) -> List[Tuple[Optional[str], ...]]:
        """One statement through payq's executor (``$n`` parameters as text,
        ``@schema@`` for payq's schema); rows as text, as payq reads them."""
        _, rows = await self._serial.call(core._executor_exec, self._executor, sql, list(params))
        return list(rows)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator["AppTransaction"]:
        """A nested transaction (see :func:`payq.appconn.savepoint`)."""
        await self._serial.call(self._executor.savepoint_begin)
        try:
            yield self
        except BaseException:
            await asyncio.shield(self._serial.call(self._executor.savepoint_rollback))
            raise
        else:
            await self._serial.call(self._executor.savepoint_release)


async def app_executor(connection: Any, *, schema: str = "payq") -> AppTransaction:
    """payq on ``connection``, inside the application's current async
    transaction: ``t = await payq.aio.app_executor(conn)``, then ``await
    t.ledger.transfer(...)``, ``await t.enqueue(...)``.

    ``connection`` is a psycopg 3 ``AsyncConnection``, an asyncpg
    ``Connection``, or an SQLAlchemy ``AsyncConnection``/``AsyncSession``
    (asyncpg or psycopg dialect; a transaction is begun if none is, as its
    autobegin would). Call from a coroutine on the loop the connection
    belongs to, inside the application's transaction, and use the result in
    that transaction only. ``schema`` is where payq's tables live.

    Raises :class:`payq.InvalidArgument` for another object, a psycopg
    connection in autocommit mode outside a transaction block, or an
    asyncpg connection outside a transaction; :class:`payq.ConfigError`
    for a malformed schema name.
    """
    loop = asyncio.get_running_loop()
    runner = await _runner_for(connection)
    return AppTransaction(core.AppExecutor(_LoopCursor(loop, runner), schema), _offload_shared())
