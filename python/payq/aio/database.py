"""payq for asyncio: :func:`connect`, :class:`Database`, :class:`Transaction`.

The same API as :func:`payq.connect` and :class:`payq.Database`, awaitable.
Each awaitable call runs the synchronous call on a thread of a bounded pool
(:mod:`payq.aio.offload`), so arguments are checked, typed errors raised and
docstrings kept in one place: the synchronous classes. See docs/async.md.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, List, Optional, Sequence, Type

from payq import _args
from payq import database as _sync
from payq.database import Row, SqlValue
from payq.aio.offload import THREADS_DEFAULT, Offload, Serial
from payq.aio.views import Inbox, Ledger, Queues, Tasks
from payq.errors import InvalidState

if TYPE_CHECKING:
    from payq.outbox import EnqueueResult, TaskRequest
    from payq.worker import TaskRun

__all__ = ["connect", "Database", "Transaction"]

TRANSACTIONS_MAX_DEFAULT = 32
"""Async transactions open at once per :class:`Database` unless told (the
core keeps up to 32 idle connections); more wait for one to end."""
_TRANSACTIONS_MAX_LIMIT = 10_000


class Transaction:
    """One payq transaction for asyncio code: ``async with db.transaction()
    as t``. It commits when the block ends normally and rolls back when it
    raises (a cancelled request included). The methods are those of
    :class:`payq.Transaction`, awaitable; calls run one at a time."""

    def __init__(self, database: "Database") -> None:
        self._database = database
        self._serial = Serial(database._offload)
        self._sync_open: Optional[_sync.Transaction] = None
        self._slot_held = False

    @property
    def _sync(self) -> _sync.Transaction:
        found = self._sync_open
        if found is None:
            raise InvalidState("use the transaction inside `async with db.transaction() as t:`")
        return found

    async def __aenter__(self) -> "Transaction":
        if self._sync_open is not None:
            raise InvalidState("a payq.aio.Transaction is entered once")
        await self._database._slots().acquire()
        self._slot_held = True
        try:
            self._sync_open = await self._serial.call(self._database._sync.transaction)
        except BaseException:
            self._release_slot()
            raise
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        try:
            # Shielded: a second cancellation must not leave the transaction
            # (and its connection) open; the commit or rollback runs to its end.
            await asyncio.shield(self._serial.call(self._sync.__exit__, exc_type, exc, tb))
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self._database._slots().release()

    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> List[Row]:
        """Awaitable :meth:`payq.Transaction.execute`."""
        return await self._serial.call(self._sync.execute, sql, params)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator["Transaction"]:
        """A nested transaction (see :meth:`payq.Transaction.savepoint`):
        ``async with t.savepoint(): ...``."""
        core_tx = self._sync._tx
        await self._serial.call(core_tx.savepoint_begin)
        try:
            yield self
        except BaseException:
            await asyncio.shield(self._serial.call(core_tx.savepoint_rollback))
            raise
        else:
            await self._serial.call(core_tx.savepoint_release)

    async def commit(self) -> None:
        """Awaitable :meth:`payq.Transaction.commit`."""
        await self._serial.call(self._sync.commit)

    async def rollback(self) -> None:
        """Awaitable :meth:`payq.Transaction.rollback`."""
        await self._serial.call(self._sync.rollback)

    async def enqueue(self, kind: str, payload: Any = None, **options: Any) -> "EnqueueResult":
        """Awaitable :meth:`payq.Transaction.enqueue`: the task exists only
        if this transaction commits."""
        return await self._serial.call(self._sync.enqueue, kind, payload, **options)

    async def enqueue_many(self, requests: "Iterable[TaskRequest]") -> "List[EnqueueResult]":
        """Awaitable :meth:`payq.Transaction.enqueue_many` (one round trip)."""
        return await self._serial.call(self._sync.enqueue_many, list(requests))

    async def task_complete(self, task: "TaskRun", result: Any = None) -> None:
        """Record the success of the attempt ``task`` (an async handler's
        argument) inside this transaction: :meth:`payq.TaskRun.complete`,
        awaitable. Counts only while the attempt holds its lease
        (:class:`payq.LeaseLost` otherwise, and this transaction should roll
        back); the handler then reports nothing itself."""
        await self._serial.call(task.complete, self._sync, result)

    @property
    def ledger(self) -> Ledger:
        """The ledger inside this transaction, awaitable (:class:`payq.Ledger`)."""
        return Ledger(self._sync.ledger, self._serial.call)

    @property
    def tasks(self) -> Tasks:
        """Task reads and operator actions inside this transaction, awaitable."""
        return Tasks(self._sync.tasks, self._serial.call)

    @property
    def inbox(self) -> Inbox:
        """Provider callbacks settled inside this transaction, awaitable."""
        return Inbox(self._sync.inbox, self._serial.call)

    @property
    def is_open(self) -> bool:
        """False once committed or rolled back (and before ``async with``)."""
        return self._sync_open is not None and self._sync_open.is_open

    @property
    def savepoint_depth(self) -> int:
        """How many savepoints are open."""
        return self._sync.savepoint_depth


class Database:
    """A payq database for asyncio code: :class:`payq.Database`'s API,
    awaitable. Obtain one with ``await payq.aio.connect(...)``; close it
    with ``await db.close()`` or ``async with``."""

    def __init__(self, database: _sync.Database, offload: Offload, transactions_max: int) -> None:
        self._sync = database
        self._offload = offload
        self._transactions_max = transactions_max
        self._slots_open: Optional[asyncio.Semaphore] = None

    def _slots(self) -> asyncio.Semaphore:
        # Made on first use, inside the running loop (Python 3.9 binds a
        # semaphore to the loop current when it is made).
        if self._slots_open is None:
            self._slots_open = asyncio.Semaphore(self._transactions_max)
        return self._slots_open

    @property
    def sync(self) -> _sync.Database:
        """The synchronous :class:`payq.Database` underneath, for what has
        no async form (a :class:`payq.Worker`, the CLI's helpers)."""
        return self._sync

    @property
    def threads(self) -> int:
        """Threads of the pool payq's blocking calls run on."""
        return self._offload.threads

    @property
    def transactions_max(self) -> int:
        """Async transactions open at once; more wait for one to end."""
        return self._transactions_max

    @property
    def dsn(self) -> str:
        """The libpq connection string in use."""
        return self._sync.dsn

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding every payq object."""
        return self._sync.schema

    @property
    def dsn_source(self) -> str:
        """Where the DSN came from (see :attr:`payq.Database.dsn_source`)."""
        return self._sync.dsn_source

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._sync.closed

    def transaction(self) -> Transaction:
        """A transaction: ``async with db.transaction() as t: ...``."""
        return Transaction(self)

    async def migrate(self) -> _sync.MigrateReport:
        """Awaitable :meth:`payq.Database.migrate`."""
        return await self._offload.call(self._sync.migrate)

    async def schema_version(self) -> int:
        """Awaitable :meth:`payq.Database.schema_version`."""
        return await self._offload.call(self._sync.schema_version)

    async def replication_lag(self) -> Optional[timedelta]:
        """Awaitable :meth:`payq.Database.replication_lag`."""
        return await self._offload.call(self._sync.replication_lag)

    async def notify(self, queues: Iterable[str]) -> None:
        """Awaitable :meth:`payq.Database.notify`: wake workers after
        committing tasks on the application's own connection."""
        await self._offload.call(self._sync.notify, list(queues))

    async def enqueue(self, kind: str, payload: Any = None, **options: Any) -> "EnqueueResult":
        """Awaitable :meth:`payq.Database.enqueue` (a transaction of its own)."""
        return await self._offload.call(self._sync.enqueue, kind, payload, **options)

    async def enqueue_many(self, requests: "Iterable[TaskRequest]") -> "List[EnqueueResult]":
        """Awaitable :meth:`payq.Database.enqueue_many`."""
        return await self._offload.call(self._sync.enqueue_many, list(requests))

    @property
    def ledger(self) -> Ledger:
        """The ledger, awaitable; each call in a transaction of its own,
        re-run on serialization failure or deadlock (bounded)."""
        return Ledger(self._sync.ledger, self._offload.call)

    @property
    def tasks(self) -> Tasks:
        """Task reads and operator actions, awaitable."""
        return Tasks(self._sync.tasks, self._offload.call)

    @property
    def queues(self) -> Queues:
        """Queue settings (limits, pause, resume), awaitable."""
        return Queues(self._sync.queues, self._offload.call)

    @property
    def inbox(self) -> Inbox:
        """Provider callbacks, awaitable."""
        return Inbox(self._sync.inbox, self._offload.call)

    async def close(self) -> None:
        """Close the connection pool (see :meth:`payq.Database.close`) and
        let the pool's threads go. Idempotent."""
        self._sync.close()
        self._offload.close()

    async def __aenter__(self) -> "Database":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<payq.aio.Database schema={self.schema!r} threads={self.threads}>"


async def connect(dsn: Optional[str] = None, *, threads: int = THREADS_DEFAULT,
                  transactions_max: int = TRANSACTIONS_MAX_DEFAULT, **options: Any) -> Database:
    """Open a payq database for asyncio code: ``db = await
    payq.aio.connect(dsn)``. ``dsn`` and ``options`` are those of
    :func:`payq.connect` (``schema``, ``migrate``, ``pooler``, ...), checked
    by it.

    ``threads`` (default 8) bounds the pool the blocking C++ work runs on:
    as many database round trips at once, each on its own pooled
    connection. ``transactions_max`` (default 32) bounds the async
    transactions open at once, each holding a connection between its
    awaits; a further ``db.transaction()`` waits for one to end.
    """
    threads = _args.integer(threads, "threads", 1, 256)
    transactions_max = _args.integer(transactions_max, "transactions_max", 1, _TRANSACTIONS_MAX_LIMIT)
    offload = Offload(threads)
    try:
        database = await offload.call(_sync.connect, dsn, **options)
    except BaseException:
        offload.close()
        raise
    return Database(database, offload, transactions_max)
