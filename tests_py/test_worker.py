import functools
import threading
import time
from datetime import timedelta

import pytest

import payq
from payq import Money, Settle
from payq.worker import Registry, Worker
from workerapp import claim_breaker_install


def _run_until(db, registry, predicate, *, queues=("default",), concurrency=2, timeout_s=30):
    worker = Worker(db, queues=queues, registry=registry, concurrency=concurrency,
                    poll_interval=timedelta(milliseconds=50), maintenance_interval=timedelta(milliseconds=50))
    worker.start()
    done = threading.Event()
    try:
        for _ in range(int(timeout_s / 0.05)):
            if predicate():
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    return done.is_set()


def test_python_handlers_run_with_every_outcome(payq_db):
    registry = Registry()
    seen_keys = []

    @registry.handler("ok")
    def ok(task):
        return {"echo": task.payload["n"]}

    @registry.handler("flaky", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    def flaky(task):
        if task.attempt < 3:
            raise RuntimeError("provider 503")
        return "third time lucky"

    @registry.handler("bad")
    def bad(task):
        raise payq.Fail("invalid account number")

    @registry.handler("maybe", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    def maybe(task):
        seen_keys.append(task.idempotency_key)
        raise payq.Unknown("timeout after sending")

    ids = {kind: payq_db.enqueue(kind, {"n": 1}, max_attempts=3).task_id for kind in ("ok", "flaky", "bad", "maybe")}
    finished = ("succeeded", "dead", "needs_review")
    assert _run_until(payq_db, registry,
                      lambda: all(payq_db.tasks.get(i).state in finished for i in ids.values()))
    assert payq_db.tasks.get(ids["ok"]).result == {"echo": 1}
    assert payq_db.tasks.get(ids["flaky"]).state == "succeeded"
    assert [a.outcome for a in payq_db.tasks.attempts(ids["flaky"])] == ["retry", "retry", "success"]
    assert payq_db.tasks.get(ids["bad"]).state == "dead"
    assert payq_db.tasks.get(ids["bad"]).error == "invalid account number"
    assert payq_db.tasks.get(ids["maybe"]).state == "needs_review"
    assert len(seen_keys) == 3 and len(set(seen_keys)) == 1  # the same key on every attempt


def test_handler_completes_inside_its_business_transaction(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    points = ledger.account("user:points", "CNY")
    registry = Registry()

    @registry.handler("grant.points")
    def grant(task):
        with payq_db.transaction() as t:
            t.ledger.transfer(world, points, task.payload["amount"], key=task.idempotency_key)
            task.complete(t, {"granted": task.payload["amount"]})

    result = payq_db.enqueue("grant.points", {"amount": "5.00"})
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(result.task_id).state == "succeeded")
    assert ledger.get_account(points).balance == Money("5.00", "CNY")
    assert payq_db.tasks.get(result.task_id).result == {"granted": "5.00"}


def test_withdrawal_settles_through_the_worker(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    registry = Registry()

    @registry.handler("payout")
    def payout(task):
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


def test_hold_past_its_expiry_stays_held_until_its_payout_settles(payq_db):
    # Issue 18's story: the hold of a withdrawal expires while its payout is
    # queued; the wallet must not be able to spend it again, and the payout
    # settles it once, with maintenance running all along.
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:9", "CNY")
    elsewhere = ledger.account("user:10", "CNY")
    ledger.transfer(world, wallet, "100.00", key="fund-9")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(wallet, "60.00", key="wd-9/hold", expires_in=timedelta(seconds=1))
        task = t.enqueue("payout", {"to": "x"}, idempotency_key="wd-9", settle=Settle.capture(hold, into=clearing))
    assert ledger.get_hold(hold.id).task_id == task.task_id
    with payq_db.transaction() as t:
        t.execute("UPDATE @schema@.hold SET expires_at = now() - interval '1 minute' WHERE id = $1", [hold.id])
    assert ledger.expire_holds() == 0
    assert ledger.get_account(wallet).available == Money("40.00", "CNY")
    with pytest.raises(payq.InsufficientFunds):
        ledger.transfer(wallet, elsewhere, "60.00", key="spend-again")
    with pytest.raises(payq.HoldInUse) as refused:
        ledger.release(hold, key="wd-9/release-by-hand")
    assert refused.value.task_id == task.task_id
    assert isinstance(refused.value, payq.InvalidState)

    registry = Registry()
    registry.handler("payout")(lambda t: {"paid": True})
    assert _run_until(payq_db, registry, lambda: ledger.get_hold(hold.id).status != "active")
    assert ledger.get_hold(hold.id).status == "captured"
    assert ledger.get_account(wallet).balance == Money("40.00", "CNY")
    assert ledger.get_account(clearing).balance == Money("60.00", "CNY")
    assert ledger.audit().ok


def test_registering_a_kind_twice_is_refused():
    registry = Registry()
    registry.handler("x")(lambda task: None)
    with pytest.raises(payq.InvalidArgument):
        registry.handler("x")(lambda task: None)


def test_batched_completion_option_records_successes_together(payq_db):
    registry = Registry()

    @registry.handler("cache.warm", batched_completion=True)
    def warm(task):
        return {"n": task.payload["n"]}

    ids = [payq_db.enqueue("cache.warm", {"n": n}).task_id for n in range(20)]
    worker = Worker(payq_db, registry=registry, concurrency=2, batch=10,
                    poll_interval=timedelta(milliseconds=50), maintenance=False, listen=False, log=False)
    worker.start()
    done = threading.Event()
    try:
        for _ in range(600):
            if all(payq_db.tasks.get(i).state == "succeeded" for i in ids):
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    assert done.is_set()
    assert [payq_db.tasks.get(i).result for i in ids] == [{"n": n} for n in range(20)]
    assert all([a.outcome for a in payq_db.tasks.attempts(i)] == ["success"] for i in ids)
    stats = worker.stats()
    assert stats["batched_completions"] == 20
    assert stats["succeeded"] == 20


def test_claimed_batch_crosses_into_python_once_and_one_raise_fails_only_its_task(payq_db):
    # The engine hands a claimed batch's run of one kind to Python in one
    # call (one GIL acquisition) and records the outcomes once it returns:
    # while the second task runs, the first one's outcome is not written yet.
    registry = Registry()
    first_state_seen = []

    ids = [payq_db.enqueue("card.charge", {"n": n}).task_id for n in range(6)]

    @registry.handler("card.charge", base_delay=timedelta(seconds=60))
    def charge(task):
        if task.id == ids[1]:
            first_state_seen.append(payq_db.tasks.get(ids[0]).state)
        if task.id == ids[3]:
            raise RuntimeError("card network down")
        return {"n": task.payload["n"]}

    worker = Worker(payq_db, registry=registry, concurrency=1, batch=10,
                    poll_interval=timedelta(milliseconds=50), maintenance=False, listen=False, log=False)
    worker.start()
    done = threading.Event()
    try:
        for _ in range(600):
            if all(len(payq_db.tasks.attempts(i)) == 1 for i in ids):
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    assert done.is_set()
    assert first_state_seen == ["running"]
    for n, task_id in enumerate(ids):
        task = payq_db.tasks.get(task_id)
        if n == 3:
            assert task.state == "pending"
            attempt = payq_db.tasks.attempts(task_id)[0]
            assert attempt.outcome == "retry"
            assert "card network down" in attempt.error
        else:
            assert task.state == "succeeded"
            assert task.result == {"n": n}
    stats = worker.stats()
    assert stats["succeeded"] == 5
    assert stats["retried"] == 1


def test_task_run_builds_the_task_only_when_a_handler_reads_it(payq_db):
    registry = Registry()
    seen = []

    @registry.handler("lazy.read")
    def lazy(task):
        seen.append((task._task is None, task.payload, task.idempotency_key, task._task is not None))
        return None

    task_id = payq_db.enqueue("lazy.read", {"to": "+86 138"}).task_id
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(task_id).state == "succeeded")
    assert seen == [(True, {"to": "+86 138"}, f"task:{task_id}", True)]


def test_unstorable_result_is_unknown_and_settles_nothing(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    registry = Registry()

    @registry.handler("payout")
    def payout(task):
        return object()  # the provider's raw response, say: not JSON

    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "10.00", key="wd")
        task_id = t.enqueue("payout", {}, settle=Settle.capture(hold, into=clearing), max_attempts=1).task_id
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(task_id).state != "running"
                      and payq_db.tasks.attempts(task_id))
    assert payq_db.tasks.get(task_id).state == "needs_review"
    assert ledger.get_hold(hold.id).status == "active"
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "unknown"
    assert attempt.error.startswith("result could not be stored as JSON: ")
    assert "object" in attempt.error


def test_result_with_a_nul_character_is_unknown_and_settles_nothing(payq_db):
    """JSON that PostgreSQL's jsonb cannot hold (a NUL character) is no
    success either: the core checks every handler's result before storing."""
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    registry = Registry()

    @registry.handler("payout")
    def payout(task):
        return {"provider_raw": "ok\x00"}  # a provider's bytes, passed on as they came

    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "10.00", key="wd")
        task_id = t.enqueue("payout", {}, settle=Settle.capture(hold, into=clearing), max_attempts=1).task_id
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(task_id).state != "running"
                      and payq_db.tasks.attempts(task_id))
    assert payq_db.tasks.get(task_id).state == "needs_review"
    assert ledger.get_hold(hold.id).status == "active"
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "unknown"
    assert attempt.error.startswith("result cannot be stored: ")


def test_handler_returning_a_coroutine_is_unknown_without_a_warning(payq_db, recwarn):
    registry = Registry()

    async def send(task):
        return {"sent": True}

    @registry.handler("sms.send")
    def wrapper(task):
        return send(task)  # a sync wrapper around an async function

    task_id = payq_db.enqueue("sms.send", {}, max_attempts=1).task_id
    finished = ("succeeded", "dead", "needs_review")
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(task_id).state in finished)
    assert payq_db.tasks.get(task_id).state == "needs_review"
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.outcome == "unknown"
    assert "coroutine" in attempt.error
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


class _AsyncCallable:
    async def __call__(self, task):
        return None


async def _async_handler(task, extra=None):
    return None


async def _async_generator_handler(task):
    yield None


@pytest.mark.parametrize("function", [
    _async_handler,
    functools.partial(_async_handler, extra=1),
    _AsyncCallable(),
    functools.partial(_AsyncCallable()),
], ids=["coroutine function", "partial", "async __call__", "partial of async __call__"])
def test_async_handlers_are_accepted_at_registration(function):
    # They run on the handler event loop (tests_py/test_async_handlers.py).
    registry = Registry()
    assert registry.handler("x")(function) is function
    assert registry.kinds() == ["x"]


def test_async_generator_handlers_are_refused_at_registration():
    registry = Registry()
    with pytest.raises(payq.InvalidArgument, match="an async generator gives no single result"):
        registry.handler("x")(_async_generator_handler)
    assert registry.kinds() == []


def test_module_level_handler_refuses_async_generators():
    with pytest.raises(payq.InvalidArgument, match="an async generator gives no single result"):
        payq.handler("test.async.refused")(_async_generator_handler)
    assert "test.async.refused" not in payq.worker.registry.kinds()



def test_run_ends_and_raises_when_a_worker_thread_fails(payq_db):
    registry = Registry()
    registry.handler("x")(lambda task: None)
    claim_breaker_install(payq_db)
    payq_db.enqueue("x", {})
    worker = Worker(payq_db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=50),
                    listen=False, maintenance=False, shutdown_grace=timedelta(seconds=5), log=False)
    # Without the fix run() would idle until this stop request.
    guard_s = 30.0
    guard = threading.Timer(guard_s, worker.request_stop)
    guard.start()
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="not running under a lease"):
            worker.run()
    finally:
        guard.cancel()
    assert time.monotonic() - started < guard_s
    assert worker.stop_requested
