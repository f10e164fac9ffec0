"""The executor conformance suite (test_executor_conformance.py) on the
async drivers' executors (python/payq/aio/appconn.py): psycopg 3's
AsyncConnection and asyncpg. Each connection lives on an event loop of its
own thread, as in an application; the suite calls the executor from the
test's thread, as payq's pool threads do, and every statement is run on
that loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import pytest

import payq

pytest.importorskip("asyncpg")
pytest.importorskip("psycopg")

from test_executor_conformance import *  # noqa: E402,F401,F403 (the suite's tests, run with the fixture below)
from test_aio_appconn import asyncpg_connect  # noqa: E402

ASYNC_EXECUTORS = ["psycopg-async", "asyncpg"]
# Bounds every wait on the application's loop here.
_LOOP_WAIT_S_MAX = 60.0


class _AppLoop:
    """An application's event loop on a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="app-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(_LOOP_WAIT_S_MAX)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_LOOP_WAIT_S_MAX)
        self.loop.close()


@pytest.fixture(params=ASYNC_EXECUTORS)
def executor(request: Any, payq_db: payq.Database) -> Iterator[Any]:  # noqa: F811
    """An async driver's executor inside an open transaction, rolled back afterwards."""
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.conformance (v text PRIMARY KEY)")
    # payq_db's own database (a copy of the migrated template): cheaper
    # than a schema migrated per test in payq_dsn's.
    dsn = payq_db.dsn
    app = _AppLoop()

    async def open_connection() -> Any:
        if request.param == "asyncpg":
            connection = await asyncpg_connect(dsn)
            transaction = connection.transaction()
            await transaction.start()
            return connection, transaction.rollback
        import psycopg

        connection = await psycopg.AsyncConnection.connect(dsn)
        return connection, connection.rollback

    connection, rollback = app.run(open_connection())
    try:
        yield app.run(payq.aio.app_executor(connection, schema=payq_db.schema)).executor
        app.run(rollback())
    finally:
        app.run(connection.close())
        app.close()
