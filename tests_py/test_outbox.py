from datetime import timedelta

import pytest

import payq
from payq import Money, Settle, TaskRequest
from payq._native import core


def _claim(db, queue="default", n=10):
    return core.outbox_claim(db._core, queue, "test-worker", n)


def _complete(db, task, outcome, *, error="", result="null", retry_after_ms=0):
    return core.outbox_complete(db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                                outcome=outcome, result_json=result, error=error, retry_after_ms=retry_after_ms,
                                worker_id="test-worker", duration_ms=3)


def test_rollback_discards_the_task_and_commit_keeps_exactly_one(payq_db):
    with pytest.raises(RuntimeError):
        with payq_db.transaction() as t:
            t.enqueue("sms.send", {"to": "+86"})
            raise RuntimeError("business failed")
    assert payq_db.tasks.list() == []
    with payq_db.transaction() as t:
        result = t.enqueue("sms.send", {"to": "+86"})
    assert result.created
    [task] = payq_db.tasks.list()
    assert task.id == result.task_id and task.state == "pending" and task.payload == {"to": "+86"}


def test_unique_key_returns_the_existing_task(payq_db):
    first = payq_db.enqueue("crm.push", {"id": 7}, unique_key="crm:7")
    second = payq_db.enqueue("crm.push", {"id": 7}, unique_key="crm:7")
    assert first.created and not second.created and first.task_id == second.task_id
    many = payq_db.enqueue_many([TaskRequest("crm.push", {"id": i}) for i in range(50)])
    assert len({r.task_id for r in many}) == 50


def test_bad_input_is_typed_and_writes_nothing(payq_db):
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("x", {"f": float("nan")})
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("x", {"s": {1, 2}})
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("x", delay=timedelta(seconds=-1))
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("x", "y" * (300 * 1024))
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("x", no_such_option=1)
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("", {})
    assert payq_db.tasks.list() == []


def test_withdrawal_settles_against_the_ledger(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "30.00", key="wd-1/hold")
        t.enqueue("payout", {"amount": "30.00"}, queue="provider", amount=Money("30.00", "CNY"),
                  idempotency_key="wd-1", settle=Settle.capture(hold, into=clearing))
    [task] = _claim(payq_db, "provider")
    assert task.idempotency_key == "wd-1"
    done = _complete(payq_db, task, "success", result='{"provider_ref": "P-1"}')
    assert done.state == "succeeded"
    assert ledger.get_hold(hold.id).status == "captured"
    assert ledger.get_account(alice).balance == Money("70.00", "CNY")
    assert payq_db.tasks.get(task.id).result == {"provider_ref": "P-1"}
    assert [a.outcome for a in payq_db.tasks.attempts(task.id)] == ["success"]
    assert ledger.audit().ok


def test_unknown_exhausted_needs_review_and_an_operator_resolves(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    bob = ledger.account("user:bob", "CNY")
    ledger.transfer(world, bob, "10.00", key="fund")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(bob, "10.00", key="wd-2/hold")
        t.enqueue("payout", max_attempts=1, settle=Settle.capture(hold, into=clearing))
    [task] = _claim(payq_db)
    assert _complete(payq_db, task, "unknown", error="timeout after send").state == "needs_review"
    assert ledger.get_hold(hold.id).status == "active"  # never compensated automatically
    alerts = payq_db.tasks.list(queue="payq.alerts")
    assert [a.kind for a in alerts] == ["payq.alert"]
    assert alerts[0].payload["task_id"] == task.id
    payq_db.tasks.resolve(task.id, applied=False, actor="ops:eve", note="provider has no record")
    assert ledger.get_hold(hold.id).status == "released"
    assert payq_db.tasks.get(task.id).state == "dead"


def test_zombie_completion_is_refused(payq_db):
    payq_db.enqueue("x", timeout=timedelta(milliseconds=1))
    [task] = _claim(payq_db)
    with payq_db.transaction() as t:
        t.execute("SELECT pg_sleep(0.01)")
    assert core.outbox_leases_rescue(payq_db._core, 10) == 1
    with pytest.raises(payq.LeaseLost):
        _complete(payq_db, task, "success")


def test_held_task_needs_a_release(payq_db):
    result = payq_db.enqueue("big.payout", held=True)
    assert _claim(payq_db) == []
    payq_db.tasks.release(result.task_id, actor="ops:frank", note="approved")
    assert len(_claim(payq_db)) == 1


def test_queue_limits_and_pause(payq_db):
    payq_db.queues.configure("provider-b", concurrency=2, rate=(100, timedelta(minutes=1)),
                             amount=(Money("50000.00", "CNY"), timedelta(hours=1)))
    for i in range(5):
        payq_db.enqueue("payout", queue="provider-b", amount=Money("20000.00", "CNY"))
    assert len(_claim(payq_db, "provider-b")) == 2  # concurrency 2 (and 40,000 of 50,000)
    payq_db.queues.pause("default")
    payq_db.enqueue("x")
    assert _claim(payq_db) == []
    payq_db.queues.resume("default")
    assert len(_claim(payq_db)) == 1
    with pytest.raises(payq.InvalidArgument):
        payq_db.queues.configure("q", concurrency=0)


def test_enqueue_joins_the_applications_transaction(payq_db, payq_dsn):
    psycopg2 = pytest.importorskip("psycopg2")
    from payq.appconn import _module  # noqa: F401  (drivers are looked up, not imported, by payq)

    params = dict(item.split("=", 1) for item in payq_dsn.split())
    conn = psycopg2.connect(host=params["host"], port=params.get("port", "5432"), user=params["user"],
                            dbname=params["dbname"])
    try:
        payq.outbox.enqueue(conn, "sms.send", {"n": 1}, schema=payq_db.schema)
        conn.rollback()
        assert payq_db.tasks.list() == []
        payq.outbox.enqueue(conn, "sms.send", {"n": 2}, schema=payq_db.schema, unique_key="sms:2")
        conn.commit()
        assert [t.payload for t in payq_db.tasks.list()] == [{"n": 2}]
    finally:
        conn.close()


def test_actions_and_crons_are_listed(payq_db):
    task = payq_db.enqueue("sms.send", {"to": "a"}, held=True)
    payq_db.tasks.release(task.task_id, actor="ops:lin", note="approved by phone")
    payq_db.tasks.cancel(task.task_id, actor="ops:mo", note="customer withdrew")
    actions = payq_db.tasks.actions(task.task_id)
    assert [(a.action, a.actor, a.note) for a in actions] == [
        ("release", "ops:lin", "approved by phone"), ("cancel", "ops:mo", "customer withdrew")]
    assert payq_db.tasks.actions(999999) == []

    # Two actions in one transaction share a timestamp; they still read in
    # the order they were taken (not by name: cancel < release).
    other = payq_db.enqueue("sms.send", {"to": "b"}, held=True)
    with payq_db.transaction() as t:
        t.tasks.release(other.task_id, actor="ops:lin")
        t.tasks.cancel(other.task_id, actor="ops:lin")
    together = payq_db.tasks.actions(other.task_id)
    assert [a.action for a in together] == ["release", "cancel"]
    assert together[0].created_at == together[1].created_at

    payq_db.queues.cron("nightly-report", "0 2 * * *", "report.send", {"to": "finance"}, queue="reports",
                        time_zone="Asia/Shanghai")
    [cron] = payq_db.queues.crons()
    assert (cron.name, cron.schedule, cron.time_zone, cron.queue, cron.kind, cron.payload) == (
        "nightly-report", "0 2 * * *", "Asia/Shanghai", "reports", "report.send", {"to": "finance"})
    payq_db.queues.cron_remove("nightly-report")
    assert payq_db.queues.crons() == []


def test_task_shows_its_settlement(payq_db):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "10.00", key="fund")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "3.00", key="wd/hold")
        settled = t.enqueue("payout", {}, settle=payq.Settle.capture(hold, into=clearing))
        plain = t.enqueue("sms.send", {})
    task = payq_db.tasks.get(settled.task_id)
    assert (task.settlement.hold_id, task.settlement.capture_account_id) == (hold.id, clearing.id)
    assert task.settlement.reverse_transaction_id is None and task.settlement.followup is None
    assert task.settlement.failure_side_moves_money
    assert not payq_db.tasks.get(plain.task_id).settlement.failure_side_moves_money
