"""Running payq on the application's own database connection.

:func:`app_executor` wraps a connection the application already has
(psycopg2, psycopg 3, Django, SQLAlchemy, or any DB-API connection to
PostgreSQL) in an executor that payq's ledger and queue operations accept in
place of a payq transaction. Their SQL then runs inside the application's
transaction: a Django view can debit a balance and save its own model
atomically, and a rollback keeps neither.

The application owns the transaction. payq never commits, rolls back or
changes autocommit on a connection it was lent; it only sends statements and
savepoints (``payq_sp_N``). The connection must be inside a transaction when
the executor is made, because payq's operations are several statements each
and must be atomic: an autocommit connection, or Django outside
``transaction.atomic()``, is refused with :class:`payq.InvalidArgument`.
A failed statement leaves the application's transaction aborted, as any
failed statement does; roll back (or use :func:`savepoint`) before going on.

The executor itself is C++ (``cpp/appconn/``, the ``payq_appconn`` library:
value conversion, error translation, parameter style), held to the same
conformance suite as payq's own connections
(``tests_py/test_executor_conformance.py``).

Cost, measured with ``bench/appconn.py`` (details in docs/app-connection.md):
a trivial ``SELECT $1::bigint`` takes 39-60 µs through the executor on
psycopg2 and 58-68 µs on psycopg 3, against 27-31 µs on payq's own prepared
libpqxx connection, same server, same run. The executor's own share is
5-20 µs over the driver's. A ledger operation is a handful of statements, so
nothing cleverer (such as sharing the driver's libpq handle) is used.
"""

from __future__ import annotations

import io
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from payq._native import core
from payq.errors import InvalidArgument

__all__ = ["AppExecutor", "app_executor", "savepoint"]

AppExecutor = core.AppExecutor
"""The executor type: pass it wherever payq accepts a transaction."""


def _module(name: str) -> Any:
    # A driver that was never imported cannot have made the object we were
    # given, so the optional drivers are looked up, never imported, here.
    return sys.modules.get(name)


def _refuse_autocommit(dbapi_connection: Any, what: str) -> None:
    if getattr(dbapi_connection, "autocommit", False) is not True:
        return
    # psycopg 2 and 3 report libpq's transaction status; anything but idle
    # (0) means a transaction block is open, as inside psycopg 3's
    # `with conn.transaction():` on an autocommit connection.
    status = getattr(getattr(dbapi_connection, "info", None), "transaction_status", 0)
    if status == 0:
        raise InvalidArgument(
            f"{what} is in autocommit mode outside a transaction: payq's operations would not be "
            "atomic. Begin a transaction first (autocommit off, or `with conn.transaction():`)"
        )


def _django_cursor(connection: Any) -> Any:
    if connection.vendor != "postgresql":
        raise InvalidArgument(f"payq needs PostgreSQL; this Django connection is {connection.vendor}")
    if connection.get_autocommit():
        raise InvalidArgument(
            "Django is in autocommit mode here: call payq inside transaction.atomic() "
            "(or ATOMIC_REQUESTS) so its statements commit or roll back with yours"
        )
    # Django's cursor wrapper, not the raw driver cursor under it: statements
    # then pass Django's checks (a broken atomic block is refused), its
    # execute_wrappers and query logging, and its error translation.
    return connection.cursor()


def _dbapi_cursor(dbapi_connection: Any, what: str) -> Any:
    """A plain tuple-row cursor on a psycopg 2/3 or other DB-API connection."""
    _refuse_autocommit(dbapi_connection, what)
    psycopg = _module("psycopg")
    if psycopg is not None:
        if isinstance(dbapi_connection, psycopg.AsyncConnection):
            raise InvalidArgument("payq's executor is synchronous; an async psycopg connection cannot be used")
        if isinstance(dbapi_connection, psycopg.Connection):
            from psycopg.rows import tuple_row

            # The application's row factory (dict_row, ...) stays on its own cursors.
            return dbapi_connection.cursor(row_factory=tuple_row)
    psycopg2 = _module("psycopg2.extensions")
    if psycopg2 is not None and isinstance(dbapi_connection, psycopg2.connection):
        return dbapi_connection.cursor(cursor_factory=psycopg2.cursor)
    return dbapi_connection.cursor()


def _copy_in(cursor: Any) -> Optional[Callable[[str, bytes], None]]:
    """The driver's ``COPY ... FROM STDIN`` for a cursor from
    :func:`_cursor_for`, or None where the driver has none payq uses (the
    executor then writes large batches with statements)."""
    # Django's cursor wrapper keeps the driver's cursor as .cursor.
    raw = cursor.cursor if type(cursor).__module__.startswith("django.") else cursor
    psycopg = _module("psycopg")
    if psycopg is not None and isinstance(raw, psycopg.Cursor):
        def copy_psycopg(sql: str, data: bytes) -> None:
            with raw.copy(sql) as copy:
                copy.write(data)
        return copy_psycopg
    psycopg2 = _module("psycopg2.extensions")
    if psycopg2 is not None and isinstance(raw, psycopg2.cursor):
        def copy_psycopg2(sql: str, data: bytes) -> None:
            raw.copy_expert(sql, io.BytesIO(data))
        return copy_psycopg2
    return None


def _sqlalchemy_cursor(connection: Any) -> Any:
    if connection.dialect.name != "postgresql":
        raise InvalidArgument(f"payq needs PostgreSQL; this SQLAlchemy connection is {connection.dialect.name}")
    cursor = _dbapi_cursor(connection.connection.dbapi_connection, "the SQLAlchemy connection")
    if not connection.in_transaction():
        # What SQLAlchemy's autobegin does on the first execute: the work
        # belongs to the transaction the application commits with
        # connection.commit(). Without it, returning the connection to the
        # pool would silently roll payq's statements back.
        connection.begin()
    return cursor


def _cursor_for(connection: Any) -> Any:
    django_base = _module("django.db.backends.base.base")
    django_proxy = _module("django.utils.connection")
    if (django_base is not None and isinstance(connection, django_base.BaseDatabaseWrapper)) or (
        django_proxy is not None and isinstance(connection, django_proxy.ConnectionProxy)
    ):
        return _django_cursor(connection)

    sqlalchemy_engine = _module("sqlalchemy.engine")
    sqlalchemy_orm = _module("sqlalchemy.orm")
    if sqlalchemy_orm is not None and isinstance(connection, (sqlalchemy_orm.Session, sqlalchemy_orm.scoped_session)):
        # The connection the session's transaction runs on (begun if needed).
        return _sqlalchemy_cursor(connection.connection())
    if sqlalchemy_engine is not None and isinstance(connection, sqlalchemy_engine.Connection):
        return _sqlalchemy_cursor(connection)

    if callable(getattr(connection, "cursor", None)):
        # Named by its driver's package: psycopg's class is itself called
        # Connection, which read "the Connection connection".
        return _dbapi_cursor(connection, f"this {type(connection).__module__.split('.')[0]} connection")

    raise InvalidArgument(
        f"cannot run payq on a {type(connection).__module__}.{type(connection).__qualname__}: pass a psycopg2 "
        "or psycopg 3 connection, a Django connection, an SQLAlchemy Connection or Session, "
        "or a DB-API connection with a cursor() method"
    )


def app_executor(connection: Any, *, schema: str = "payq") -> "core.AppExecutor":
    """An executor that runs payq's SQL on ``connection``, inside the
    application's current transaction.

    ``connection`` may be a psycopg2 connection, a psycopg 3 ``Connection``,
    a Django connection (``django.db.connection`` or ``connections[alias]``,
    inside ``transaction.atomic()``), an SQLAlchemy ``Connection`` or
    ``Session`` (Flask-SQLAlchemy's ``db.session`` too), or any DB-API
    connection to PostgreSQL with a ``cursor()`` method. ``schema`` is where
    payq's tables live (migrated beforehand with :meth:`payq.Database.migrate`).

    The application owns commit and rollback; payq never ends the
    transaction. For SQLAlchemy a transaction is begun if none is (as its
    autobegin would); ``Session.commit()``/``Connection.commit()`` then
    commits payq's work with the application's. Use one executor per
    transaction, from one thread at a time.

    Raises :class:`payq.InvalidArgument` for anything else, for a connection
    in autocommit mode, and for Django outside an atomic block;
    :class:`payq.ConfigError` for a malformed schema name.
    """
    cursor = _cursor_for(connection)
    return core.AppExecutor(cursor, schema, _copy_in(cursor))


@contextmanager
def savepoint(executor: "core.AppExecutor") -> Iterator["core.AppExecutor"]:
    """A nested transaction on an application executor: if the block raises,
    the statements it sent through ``executor`` are undone and the exception
    propagates, while the application's transaction stays usable.

    Statements the application sends on the same connection inside the block
    are undone too: a savepoint belongs to the connection, not to payq.
    """
    executor.savepoint_begin()
    try:
        yield executor
    except BaseException:
        executor.savepoint_rollback()
        raise
    else:
        executor.savepoint_release()
