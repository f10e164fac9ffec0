import threading
from datetime import timedelta

import pytest

import payq
from payq import Money, Settle
from payq.worker import Registry, Worker


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
