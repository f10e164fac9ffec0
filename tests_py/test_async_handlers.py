"""Async handlers (``@payq.handler`` on an ``async def``; bindings/
bind_async_handler.cpp and python/payq/aio/handler_loop.py): the same
outcomes, settlement and fencing as synchronous handlers, many tasks in
flight on one worker thread, and cancellation when the lease runs out."""

from __future__ import annotations

import asyncio
import functools
import threading
from datetime import timedelta

import pytest

import payq
from payq import Money, Settle
from payq.aio.handler_loop import handler_loop
from payq.outbox import TaskRequest
from payq.worker import Registry, Worker

FINISHED = ("succeeded", "dead", "needs_review")
# Every wait in these tests is bounded by this, never relied on for timing.
WAIT_S_MAX = 30.0


def _run_until(db, registry, predicate, *, concurrency=2, batch=10):
    worker = Worker(db, registry=registry, concurrency=concurrency, batch=batch,
                    poll_interval=timedelta(milliseconds=50), maintenance_interval=timedelta(milliseconds=50),
                    log=False)
    worker.start()
    done = threading.Event()
    try:
        for _ in range(int(WAIT_S_MAX / 0.05)):
            if predicate():
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    return done.is_set()


def _all_finished(db, ids):
    return lambda: all(db.tasks.get(i).state in FINISHED for i in ids)


class _AsyncCallable:
    async def __call__(self, task):
        await asyncio.sleep(0)
        return {"callable": task.payload["n"]}


async def _with_extra(task, extra):
    await asyncio.sleep(0)
    return {"extra": extra}


def test_async_handlers_run_with_every_outcome(payq_db):
    registry = Registry()
    seen_keys = []

    @registry.handler("ok")
    async def ok(task):
        await asyncio.sleep(0)
        return {"echo": task.payload["n"]}

    @registry.handler("flaky", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    async def flaky(task):
        await asyncio.sleep(0)
        if task.attempt < 3:
            raise payq.Retry("provider busy")
        return "third time lucky"

    @registry.handler("bad")
    async def bad(task):
        raise payq.Fail("invalid account number")

    @registry.handler("maybe", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    async def maybe(task):
        seen_keys.append(task.idempotency_key)
        await asyncio.sleep(0)
        raise payq.Unknown("timeout after sending")

    registry.handler("callable")(_AsyncCallable())
    registry.handler("partial")(functools.partial(_with_extra, extra="given"))

    kinds = ("ok", "flaky", "bad", "maybe", "callable", "partial")
    ids = {kind: payq_db.enqueue(kind, {"n": 1}, max_attempts=3).task_id for kind in kinds}
    assert _run_until(payq_db, registry, _all_finished(payq_db, ids.values()))
    assert payq_db.tasks.get(ids["ok"]).result == {"echo": 1}
    assert payq_db.tasks.get(ids["flaky"]).state == "succeeded"
    assert [a.outcome for a in payq_db.tasks.attempts(ids["flaky"])] == ["retry", "retry", "success"]
    assert payq_db.tasks.get(ids["bad"]).state == "dead"
    assert payq_db.tasks.get(ids["bad"]).error == "invalid account number"
    assert payq_db.tasks.get(ids["maybe"]).state == "needs_review"
    assert len(seen_keys) == 3 and len(set(seen_keys)) == 1  # the same key on every attempt
    assert payq_db.tasks.get(ids["callable"]).result == {"callable": 1}
    assert payq_db.tasks.get(ids["partial"]).result == {"extra": "given"}


def test_async_handler_that_raises_is_retried_with_its_traceback(payq_db):
    registry = Registry()

    @registry.handler("boom")
    async def boom(task):
        await asyncio.sleep(0)
        raise ValueError("provider said no")

    task_id = payq_db.enqueue("boom", {}, max_attempts=1).task_id
    assert _run_until(payq_db, registry, _all_finished(payq_db, [task_id]))
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "retry"
    assert attempt.error == "ValueError: provider said no"
    assert "in boom" in attempt.traceback
    assert payq_db.tasks.get(task_id).state == "dead"


def test_async_handler_result_that_cannot_be_stored_is_unknown(payq_db):
    registry = Registry()

    @registry.handler("odd")
    async def odd(task):
        return object()

    task_id = payq_db.enqueue("odd", {}, max_attempts=1).task_id
    assert _run_until(payq_db, registry, _all_finished(payq_db, [task_id]))
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "unknown"
    assert attempt.error.startswith("result could not be stored as JSON")


def test_async_handler_is_cancelled_when_its_lease_runs_out(payq_db):
    registry = Registry()
    cancelled = threading.Event()

    @registry.handler("slow")
    async def slow(task):
        try:
            await asyncio.sleep(WAIT_S_MAX)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    task_id = payq_db.enqueue("slow", {}, max_attempts=1, timeout=timedelta(milliseconds=300)).task_id
    assert _run_until(payq_db, registry, _all_finished(payq_db, [task_id]))
    assert cancelled.is_set()
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "unknown"
    assert "lease of 300 ms ran out" in attempt.error
    # unknown after the last attempt: an operator decides, nothing is compensated
    assert payq_db.tasks.get(task_id).state == "needs_review"


def test_async_withdrawal_settles_through_the_worker(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    registry = Registry()

    @registry.handler("payout")
    async def payout(task):
        await asyncio.sleep(0)
        if task.payload["to"] == "bad":
            raise payq.Fail("account closed at provider")
        return {"paid": True}

    holds = {}
    for to in ("good", "bad"):
        with payq_db.transaction() as t:
            hold = t.ledger.hold(alice, "10.00", key=f"wd-{to}")
            t.enqueue("payout", {"to": to}, settle=Settle.capture(hold, into=clearing))
            holds[to] = hold
    assert _run_until(payq_db, registry, lambda: all(
        ledger.get_hold(h.id).status != "active" for h in holds.values()))
    assert ledger.get_hold(holds["good"].id).status == "captured"
    assert ledger.get_hold(holds["bad"].id).status == "released"
    assert ledger.get_account(alice).balance == Money("90.00", "CNY")
    assert ledger.audit().ok


def test_async_handler_completion_is_fenced_by_its_lease(payq_db):
    # The attempt's lease is taken over (as a rescue would) while the
    # coroutine runs: its success must not be recorded over the new state.
    registry = Registry()
    started = threading.Event()
    release = threading.Event()

    @registry.handler("zombie")
    async def zombie(task):
        started.set()
        for _ in range(int(WAIT_S_MAX / 0.02)):
            if release.is_set():
                break
            await asyncio.sleep(0.02)
        return {"zombie": True}

    task_id = payq_db.enqueue("zombie", {}, max_attempts=3).task_id
    worker = Worker(payq_db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=50),
                    maintenance=False, log=False)
    worker.start()
    try:
        assert started.wait(WAIT_S_MAX)
        with payq_db.transaction() as t:
            t.execute("UPDATE @schema@.task SET lease_token = lease_token + 1000000 WHERE id = $1", [task_id])
        release.set()
        for _ in range(int(WAIT_S_MAX / 0.05)):
            if worker.stats()["lease_lost"] > 0:
                break
            release.wait(0.05)
    finally:
        worker.stop()
    assert worker.stats()["lease_lost"] == 1
    task = payq_db.tasks.get(task_id)
    assert task.state == "running" and task.result is None


def test_many_async_tasks_are_in_flight_on_one_worker_thread(payq_db):
    count = 50
    registry = Registry()
    state = {"now": 0, "max": 0}
    gate = {}

    @registry.handler("wait")
    async def wait(task):
        # All tasks wait for one another: they finish only if they are in
        # flight together (one worker thread, one claimed batch).
        event = gate.setdefault("all_in", asyncio.Event())
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        if state["now"] == count:
            event.set()
        try:
            await asyncio.wait_for(event.wait(), WAIT_S_MAX)
        finally:
            state["now"] -= 1
        return None

    ids = [r.task_id for r in payq_db.enqueue_many([TaskRequest("wait", {"i": i}) for i in range(count)])]
    assert _run_until(payq_db, registry, _all_finished(payq_db, ids), concurrency=1, batch=count)
    assert state["max"] == count
    assert all(payq_db.tasks.get(i).state == "succeeded" for i in ids)
    assert handler_loop().in_flight_max >= count


def test_async_generators_are_still_refused():
    async def generator(task):
        yield None

    registry = Registry()
    with pytest.raises(payq.InvalidArgument, match="async generator"):
        registry.handler("gen")(generator)
    assert registry.kinds() == []


def test_async_handler_completes_inside_its_business_transaction(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    points = ledger.account("user:points", "CNY")
    registry = Registry()
    databases = []

    @registry.handler("grant.points")
    async def grant(task):
        # payq.aio on the handler loop: the database work runs off the loop.
        if not databases:
            databases.append(await payq.aio.connect(payq_db.dsn, schema=payq_db.schema, threads=2))
        async with databases[0].transaction() as t:
            await t.ledger.transfer(world, points, task.payload["amount"], key=task.idempotency_key)
            await t.task_complete(task, {"granted": task.payload["amount"]})

    result = payq_db.enqueue("grant.points", {"amount": "5.00"})
    try:
        assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(result.task_id).state == "succeeded")
    finally:
        if databases:
            handler_loop().run(databases[0].close()).result(WAIT_S_MAX)
    assert payq_db.tasks.get(result.task_id).result == {"granted": "5.00"}
    assert ledger.get_account(points).balance == Money("5.00", "CNY")
    [attempt] = payq_db.tasks.attempts(result.task_id)
    assert attempt.outcome == "success"
