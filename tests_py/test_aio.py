"""payq.aio on payq's own connections (python/payq/aio/database.py): the
synchronous API, awaitable, run on a bounded pool off the event loop; the
same checks, typed errors and transaction semantics."""

from __future__ import annotations

import asyncio
import threading

import pytest

import payq
from payq import Money, Settle
from payq.outbox import TaskRequest


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def adb(payq_db):
    """An async Database on the test's fresh payq."""
    db = run(payq.aio.connect(payq_db.dsn, schema=payq_db.schema, threads=4, transactions_max=4))
    yield db
    run(db.close())


async def _funded(db, amount="100.00"):
    world = await db.ledger.account("world", "EUR", "system", allow_negative=True)
    alice = await db.ledger.account("user:alice", "EUR")
    await db.ledger.transfer(world, alice, amount, key="fund")
    return world, alice


def test_transaction_commits_ledger_and_task_together(adb, payq_db):
    async def main():
        world, alice = await _funded(adb)
        clearing = await adb.ledger.account("clearing", "EUR", "system", allow_negative=True)
        async with adb.transaction() as t:
            hold = await t.ledger.hold(alice, "25.00", key="wd-1")
            result = await t.enqueue("payout", {"to": "iban"}, settle=Settle.capture(hold, into=clearing))
            assert t.is_open
        assert not t.is_open
        return alice, hold, result

    alice, hold, result = run(main())
    assert payq_db.ledger.get_hold(hold.id).status == "active"
    assert payq_db.ledger.get_account(alice).available == Money("75.00", "EUR")
    assert payq_db.tasks.get(result.task_id).settlement.hold_id == hold.id


def test_rollback_discards_ledger_and_task(adb, payq_db):
    async def main():
        _, alice = await _funded(adb)
        with pytest.raises(RuntimeError):
            async with adb.transaction() as t:
                await t.ledger.hold(alice, "25.00", key="wd-1")
                await t.enqueue("payout", {"to": "iban"})
                raise RuntimeError("the request failed after both writes")
        return alice

    alice = run(main())
    assert payq_db.ledger.get_account(alice).available == Money("100.00", "EUR")
    assert payq_db.tasks.list() == []


def test_cancelled_request_rolls_back(adb, payq_db):
    async def main():
        _, alice = await _funded(adb)
        written = asyncio.Event()

        async def request():
            async with adb.transaction() as t:
                await t.ledger.hold(alice, "25.00", key="wd-1")
                written.set()
                await asyncio.sleep(60)

        task = asyncio.ensure_future(request())
        await asyncio.wait_for(written.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return alice

    alice = run(main())
    assert payq_db.ledger.get_account(alice).available == Money("100.00", "EUR")


def test_bad_input_raises_the_typed_error_before_anything_is_written(adb, payq_db):
    async def main():
        _, alice = await _funded(adb)
        async with adb.transaction() as t:
            with pytest.raises(payq.InvalidAmount):
                await t.ledger.hold(alice, 1.5, key="float")  # never a float
            with pytest.raises(payq.InvalidArgument):
                await t.enqueue("", {})
            with pytest.raises(payq.InsufficientFunds):
                async with t.savepoint():
                    await t.ledger.hold(alice, "1000.00", key="too-much")
            await t.enqueue("ok", {})
        return alice

    alice = run(main())
    assert payq_db.ledger.get_account(alice).available == Money("100.00", "EUR")
    assert [task.kind for task in payq_db.tasks.list()] == ["ok"]


def test_calls_run_off_the_event_loop_thread(adb):
    seen = []

    async def main():
        loop_thread = threading.get_ident()
        async with adb.transaction() as t:
            await t.execute("SELECT 1")
        seen.append(loop_thread)

    original = payq.Transaction.execute

    def spy(self, sql, params=()):
        seen.append(threading.get_ident())
        return original(self, sql, params)

    payq.Transaction.execute = spy
    try:
        run(main())
    finally:
        payq.Transaction.execute = original
    call_thread, loop_thread = seen
    assert call_thread != loop_thread


def test_concurrent_transfers_are_bounded_and_balance(adb, payq_db):
    async def main():
        world, alice = await _funded(adb, "1000.00")
        bob = await adb.ledger.account("user:bob", "EUR")
        open_now = {"now": 0, "max": 0}

        async def move(i):
            async with adb.transaction() as t:
                open_now["now"] += 1
                open_now["max"] = max(open_now["max"], open_now["now"])
                await asyncio.sleep(0)
                await t.ledger.transfer(alice, bob, "1.00", key=f"move-{i}")
                await t.enqueue("notify", {"i": i})
                open_now["now"] -= 1

        await asyncio.gather(*(move(i) for i in range(40)))
        return alice, bob, open_now["max"]

    alice, bob, open_max = run(main())
    assert open_max <= adb.transactions_max
    assert payq_db.ledger.get_account(bob).balance == Money("40.00", "EUR")
    assert payq_db.ledger.get_account(alice).balance == Money("960.00", "EUR")
    assert len(payq_db.tasks.list(limit=100)) == 40
    assert payq_db.ledger.audit().ok


def test_reads_and_iteration(adb):
    async def main():
        world, alice = await _funded(adb)
        for i in range(3):
            await adb.ledger.transfer(alice, world, "1.00", key=f"back-{i}")
        entries = [e async for e in adb.ledger.iter_history(alice, page_size=2)]
        results = await adb.enqueue_many([TaskRequest("a", {}), TaskRequest("b", {})])
        task = await adb.tasks.get(results[1].task_id)
        version = await adb.schema_version()
        return entries, task, version

    entries, task, version = run(main())
    assert len(entries) == 4
    assert task.kind == "b"
    assert version > 0


def test_closed_database_refuses_use(payq_db):
    async def main():
        db = await payq.aio.connect(payq_db.dsn, schema=payq_db.schema)
        await db.close()
        with pytest.raises(payq.InvalidState):
            await db.enqueue("x", {})

    run(main())


def test_connect_checks_its_settings(payq_db):
    with pytest.raises(payq.InvalidArgument):
        run(payq.aio.connect(payq_db.dsn, schema=payq_db.schema, threads=0))
    with pytest.raises(payq.ConfigError):
        run(payq.aio.connect(payq_db.dsn, schema="public"))
