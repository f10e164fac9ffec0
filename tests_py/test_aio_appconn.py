"""payq.aio on the application's own async connection (python/payq/aio/
appconn.py): under psycopg 3's AsyncConnection, asyncpg, and SQLAlchemy's
asyncio API on both, one application transaction covers the application's
row, the ledger and the enqueued task; a rollback drops all three."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict

import pytest

import payq
from payq import Money, Settle

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")
sqlalchemy_asyncio = pytest.importorskip("sqlalchemy.ext.asyncio")

APPS = ["psycopg", "asyncpg", "sqlalchemy-asyncpg-connection", "sqlalchemy-asyncpg-session",
        "sqlalchemy-psycopg-connection", "sqlalchemy-psycopg-session"]


def conninfo(dsn: str) -> Dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}


async def asyncpg_connect(dsn: str) -> Any:
    params = conninfo(dsn)
    return await asyncpg.connect(host=params.get("host"), port=params.get("port"), user=params.get("user"),
                                 password=params.get("password"), database=params.get("dbname"))


class App:
    """An application holding its own async transaction on one driver."""

    def __init__(self, kind: str, dsn: str, schema: str) -> None:
        self.kind, self.dsn, self.schema = kind, dsn, schema
        self.table = f'"{schema}".app_row'

    async def open(self) -> None:
        if self.kind == "psycopg":
            self.connection = await psycopg.AsyncConnection.connect(self.dsn)
        elif self.kind == "asyncpg":
            self.connection = await asyncpg_connect(self.dsn)
        else:
            driver = "asyncpg" if "asyncpg" in self.kind else "psycopg"
            creator = (lambda: asyncpg_connect(self.dsn)) if driver == "asyncpg" else (
                lambda: psycopg.AsyncConnection.connect(self.dsn))
            self.engine = sqlalchemy_asyncio.create_async_engine(f"postgresql+{driver}://", async_creator=creator)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """Yields ``(payq's AppTransaction, insert)`` inside the application's
        transaction: committed when the block ends, rolled back if it raises."""
        if self.kind == "psycopg":
            async with self.connection.transaction():
                async def insert(v: str) -> None:
                    await self.connection.execute(f"INSERT INTO {self.table} (v) VALUES (%s)", [v])
                yield await payq.aio.app_executor(self.connection, schema=self.schema), insert
        elif self.kind == "asyncpg":
            async with self.connection.transaction():
                async def insert(v: str) -> None:
                    await self.connection.execute(f"INSERT INTO {self.table} (v) VALUES ($1)", v)
                yield await payq.aio.app_executor(self.connection, schema=self.schema), insert
        elif self.kind.endswith("-connection"):
            from sqlalchemy import text

            async with self.engine.connect() as connection:
                # payq begins the transaction, as SQLAlchemy's autobegin would.
                t = await payq.aio.app_executor(connection, schema=self.schema)

                async def insert(v: str) -> None:
                    await connection.execute(text(f"INSERT INTO {self.table} (v) VALUES (:v)"), {"v": v})
                try:
                    yield t, insert
                except BaseException:
                    await connection.rollback()
                    raise
                await connection.commit()
        else:
            from sqlalchemy import text

            async with sqlalchemy_asyncio.AsyncSession(self.engine) as session, session.begin():
                async def insert(v: str) -> None:
                    await session.execute(text(f"INSERT INTO {self.table} (v) VALUES (:v)"), {"v": v})
                yield await payq.aio.app_executor(session, schema=self.schema), insert

    async def close(self) -> None:
        if self.kind in ("psycopg", "asyncpg"):
            await self.connection.close()
        else:
            await self.engine.dispose()


@pytest.fixture(params=APPS)
def app_kind(request: Any) -> str:
    return request.param


@pytest.fixture
def accounts(payq_db: payq.Database) -> Dict[str, Any]:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.app_row (v text PRIMARY KEY)")
    ledger = payq_db.ledger
    world = ledger.account("world", "EUR", "system", allow_negative=True)
    clearing = ledger.account("clearing", "EUR", "system", allow_negative=True)
    alice = ledger.account("user:alice", "EUR")
    ledger.transfer(world, alice, "100.00", key="fund")
    return {"alice": alice, "clearing": clearing}


def app_rows(db: payq.Database) -> list:
    with db.transaction() as t:
        return [r[0] for r in t.execute("SELECT v FROM @schema@.app_row ORDER BY v")]


async def withdraw(app: App, accounts: Dict[str, Any], fail: bool) -> Any:
    async with app.transaction() as (t, insert):
        await insert("order-1")
        hold = await t.ledger.hold(accounts["alice"], "30.00", key="wd-1")
        await t.enqueue("payout", {"to": "iban"}, settle=Settle.capture(hold, into=accounts["clearing"]))
        if fail:
            raise RuntimeError("the view failed after all three writes")
        return hold


def test_commit_keeps_app_row_ledger_and_task(app_kind: str, payq_db: payq.Database,
                                              accounts: Dict[str, Any]) -> None:
    async def main() -> Any:
        app = App(app_kind, payq_db.dsn, payq_db.schema)
        await app.open()
        try:
            return await withdraw(app, accounts, fail=False)
        finally:
            await app.close()

    hold = asyncio.run(main())
    assert app_rows(payq_db) == ["order-1"]
    assert payq_db.ledger.get_hold(hold.id).status == "active"
    assert payq_db.ledger.get_account(accounts["alice"]).available == Money("70.00", "EUR")
    [task] = payq_db.tasks.list()
    assert task.kind == "payout" and task.payload == {"to": "iban"} and task.settlement.hold_id == hold.id


def test_rollback_drops_app_row_ledger_and_task(app_kind: str, payq_db: payq.Database,
                                                accounts: Dict[str, Any]) -> None:
    async def main() -> None:
        app = App(app_kind, payq_db.dsn, payq_db.schema)
        await app.open()
        try:
            with pytest.raises(RuntimeError):
                await withdraw(app, accounts, fail=True)
        finally:
            await app.close()

    asyncio.run(main())
    assert app_rows(payq_db) == []
    assert payq_db.ledger.get_account(accounts["alice"]).available == Money("100.00", "EUR")
    assert payq_db.tasks.list() == []


def test_typed_errors_and_savepoints_on_the_app_connection(app_kind: str, payq_db: payq.Database,
                                                           accounts: Dict[str, Any]) -> None:
    async def main() -> None:
        app = App(app_kind, payq_db.dsn, payq_db.schema)
        await app.open()
        try:
            async with app.transaction() as (t, insert):
                await insert("kept")
                with pytest.raises(payq.InsufficientFunds):
                    async with t.savepoint():
                        await t.ledger.hold(accounts["alice"], "500.00", key="too-much")
                with pytest.raises(payq.DatabaseError) as duplicate:
                    async with t.savepoint():
                        await t.execute("INSERT INTO @schema@.app_row (v) VALUES ($1)", ["kept"])
                assert duplicate.value.sqlstate == "23505"
                with pytest.raises(payq.InvalidAmount):
                    await t.ledger.hold(accounts["alice"], 1.5, key="float")
                # values cross as PostgreSQL text, whatever the driver's own types
                [row] = await t.execute(
                    "SELECT $1::bigint, $2::numeric, $3::jsonb, $4::timestamptz, $5::text, $6::boolean",
                    ["9223372036854775807", "12.340", '{"a": [1, "x"]}', "2026-01-02 03:04:05.5+00", None, "t"])
                assert row == ("9223372036854775807", "12.340", '{"a": [1, "x"]}', "2026-01-02 03:04:05.5+00",
                               None, "t")
                await t.enqueue("after-errors", {})
        finally:
            await app.close()

    asyncio.run(main())
    assert app_rows(payq_db) == ["kept"]
    assert [task.kind for task in payq_db.tasks.list()] == ["after-errors"]


def test_connections_outside_a_transaction_are_refused(payq_db: payq.Database) -> None:
    async def main() -> None:
        connection = await asyncpg_connect(payq_db.dsn)
        try:
            with pytest.raises(payq.InvalidArgument, match="outside a transaction"):
                await payq.aio.app_executor(connection, schema=payq_db.schema)
        finally:
            await connection.close()
        connection = await psycopg.AsyncConnection.connect(payq_db.dsn, autocommit=True)
        try:
            with pytest.raises(payq.InvalidArgument, match="autocommit"):
                await payq.aio.app_executor(connection, schema=payq_db.schema)
        finally:
            await connection.close()
        with pytest.raises(payq.InvalidArgument, match="cannot run payq.aio"):
            await payq.aio.app_executor(object())

    asyncio.run(main())


def test_sync_use_on_the_loop_thread_is_refused_not_deadlocked(payq_db: payq.Database) -> None:
    from payq._native import core

    async def main() -> None:
        connection = await asyncpg_connect(payq_db.dsn)
        try:
            async with connection.transaction():
                t = await payq.aio.app_executor(connection, schema=payq_db.schema)
                with pytest.raises(payq.DatabaseError, match="event loop's own thread"):
                    core._executor_exec(t.executor, "SELECT 1", [])
        finally:
            await connection.close()

    asyncio.run(main())
