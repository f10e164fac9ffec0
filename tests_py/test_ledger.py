import decimal
import multiprocessing
import threading
from datetime import timedelta

import pytest

import payq
from payq import Fee, Money


@pytest.fixture
def ledger(payq_db):
    return payq_db.ledger


@pytest.fixture
def funded(ledger):
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    bob = ledger.account("user:bob", "CNY")
    ledger.transfer(world, alice, "1000.00", key="fund-alice")
    return world, alice, bob


def test_account_open_is_open_or_get(ledger):
    a = ledger.account("user:42", "CNY")
    b = ledger.account("user:42", "CNY")
    assert a.id == b.id
    assert a.balance == Money(0, "CNY")
    assert ledger.find_account("user:42", "CNY").id == a.id
    assert ledger.find_account("user:43", "CNY") is None


def test_transfer_with_fee_returns_money_and_entries(ledger, funded):
    _, alice, bob = funded
    fees = ledger.account("fees", "CNY", "system", deferred_credit=True)
    tx = ledger.transfer(alice, bob, "12.34", key="order-1", fee=Fee(bps=60), fee_account=fees)
    assert [e.amount for e in tx.entries] == [Money("-12.41", "CNY"), Money("12.34", "CNY"), Money("0.07", "CNY")]
    assert tx.entries[0].balance_after == Money("987.59", "CNY")
    assert tx.entries[0].balance_before == Money("1000.00", "CNY")
    assert tx.entries[2].pending  # credited to the hot account later
    assert ledger.get_account(fees).balance == Money("0.07", "CNY")
    assert ledger.get_account(fees).available == Money(0, "CNY")
    assert ledger.fold_pending(fees) == 1
    assert ledger.get_account(fees).available == Money("0.07", "CNY")
    assert ledger.audit().ok


def test_amounts_are_exact_and_floats_refused(ledger, funded):
    _, alice, bob = funded
    with pytest.raises(payq.InvalidAmount):
        ledger.transfer(alice, bob, 1.5, key="f")
    with pytest.raises(payq.InvalidAmount):
        ledger.transfer(alice, bob, "1.234", key="f")
    with pytest.raises(payq.InvalidAmount):
        ledger.transfer(alice, bob, 2**63, key="f")
    with pytest.raises(payq.InvalidAmount):
        ledger.transfer(alice, bob, decimal.Decimal("NaN"), key="f")
    with pytest.raises(payq.InvalidAmount):
        ledger.transfer(alice, bob, 0, key="f")
    tx = ledger.transfer(alice, bob, decimal.Decimal("0.10"), key="d")
    assert tx.entries[1].amount.minor == 10
    tx = ledger.transfer(alice, bob, 5, key="i")  # int: minor units
    assert tx.entries[1].amount == Money("0.05", "CNY")
    assert ledger.find_transaction("f") is None


def test_errors_are_typed_and_nothing_is_written(ledger, funded, payq_db):
    world, alice, bob = funded
    usd = ledger.account("user:alice", "USD")
    before = ledger.get_account(alice)
    with pytest.raises(payq.InsufficientFunds):
        ledger.transfer(alice, bob, "1000.01", key="too-much")
    with pytest.raises(payq.CurrencyMismatch):
        ledger.transfer(alice, usd, 1, key="usd")
    with pytest.raises(payq.UnknownAccount):
        ledger.transfer(alice, 987654, 1, key="nobody")
    with pytest.raises(payq.UnknownCurrency):
        ledger.account("x", "QQQ")
    with pytest.raises(payq.InvalidArgument):
        ledger.transfer(alice, bob, 1, key="")
    with pytest.raises(payq.InvalidArgument):
        ledger.transfer(alice, bob, 1, key="k" * 300)
    with pytest.raises(payq.InvalidArgument):
        ledger.transfer(alice, bob, 1, key=42)
    with pytest.raises(payq.InvalidArgument):
        ledger.transfer(alice, bob, 1, key="m", metadata={"x": float("nan")})
    with pytest.raises(payq.Unbalanced):
        ledger.post([(alice, -5), (bob, 4)], key="unbalanced")
    assert ledger.get_account(alice) == before
    with payq_db.transaction() as t:
        ((count,),) = t.execute("SELECT count(*) FROM @schema@.operation")
    assert count == "1"  # only the funding


def test_idempotency_replays_and_conflicts(ledger, funded):
    _, alice, bob = funded
    first = ledger.transfer(alice, bob, "10.00", key="pay-1", metadata={"order": 7})
    again = ledger.transfer(alice, bob, "10.00", key="pay-1", metadata={"order": 7})
    assert again.replayed and not first.replayed
    assert again.id == first.id
    assert again.metadata == {"order": 7}
    with pytest.raises(payq.IdempotencyConflict):
        ledger.transfer(alice, bob, "10.01", key="pay-1")
    assert ledger.get_account(bob).balance == Money("10.00", "CNY")


def test_hold_capture_release(ledger, funded):
    world, alice, _ = funded
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    h = ledger.hold(alice, "50.00", key="wd-7", expires_in=timedelta(hours=1))
    assert h.status == "active" and h.expires_at is not None
    assert ledger.get_account(alice).available == Money("950.00", "CNY")
    tx = ledger.capture(h, target=clearing, key="wd-7/capture", amount="30.00")
    assert tx.hold_id == h.id
    assert ledger.get_hold(h.id).status == "captured"
    assert ledger.get_account(alice).balance == Money("970.00", "CNY")
    assert ledger.get_account(alice).held == Money(0, "CNY")
    h2 = ledger.hold(alice, "20.00", key="wd-8")
    assert ledger.release(h2, key="wd-8/release").status == "released"
    with pytest.raises(payq.InvalidState):
        ledger.release(h2, key="wd-8/release-again")
    assert ledger.audit().ok


def test_reverse_partial_then_rest(ledger, funded):
    _, alice, bob = funded
    tx = ledger.transfer(alice, bob, "100.00", key="buy")
    refund = ledger.reverse(tx, key="refund-1", amount="2.00")
    assert refund.reverses_id == tx.id
    assert ledger.get_account(bob).balance == Money("98.00", "CNY")
    with pytest.raises(payq.InvalidAmount):
        ledger.reverse(tx, key="refund-2", amount="98.01")
    ledger.reverse(tx, key="refund-3")
    assert ledger.get_account(alice).balance == Money("1000.00", "CNY")


def test_limits(ledger, funded):
    _, alice, bob = funded
    ledger.set_limit("per_transaction_max", "100.00", account=alice)
    ledger.set_limit("daily_count", 2, namespace="default", currency="CNY")
    with pytest.raises(payq.LimitExceeded):
        ledger.transfer(alice, bob, "100.01", key="l1")
    ledger.transfer(alice, bob, "1.00", key="l2")
    ledger.transfer(alice, bob, "1.00", key="l3")
    with pytest.raises(payq.LimitExceeded):
        ledger.transfer(alice, bob, "1.00", key="l4")
    ledger.remove_limit("daily_count", namespace="default", currency="CNY")
    ledger.transfer(alice, bob, "1.00", key="l4")


def test_transaction_with_savepoint_catches_inner_failure(payq_db, funded):
    _, alice, bob = funded
    with payq_db.transaction() as t:
        t.ledger.transfer(alice, bob, "5.00", key="outer-1")
        with pytest.raises(payq.InsufficientFunds):
            with t.savepoint():
                t.ledger.transfer(alice, bob, "5000.00", key="inner")
        t.ledger.transfer(alice, bob, "6.00", key="outer-2")
    assert payq_db.ledger.get_account(bob).balance == Money("11.00", "CNY")
    assert payq_db.ledger.find_transaction("inner") is None


def test_rollback_discards_ledger_work(payq_db, funded):
    _, alice, bob = funded
    with pytest.raises(RuntimeError):
        with payq_db.transaction() as t:
            t.ledger.transfer(alice, bob, "5.00", key="gone")
            raise RuntimeError("application failed after the transfer")
    assert payq_db.ledger.find_transaction("gone") is None
    assert payq_db.ledger.get_account(bob).balance == Money(0, "CNY")


def test_history_pages(ledger, funded):
    _, alice, bob = funded
    for i in range(7):
        ledger.transfer(alice, bob, i + 1, key=f"h{i}")
    page = ledger.history(bob, limit=5)
    assert [e.seq for e in page] == [1, 2, 3, 4, 5]
    assert len(list(ledger.iter_history(bob, page_size=3))) == 7
    with pytest.raises(payq.InvalidArgument):
        ledger.history(bob, limit=0)


def test_audit_reports_violations(ledger, funded, payq_db):
    _, alice, _ = funded
    with payq_db.transaction() as t:
        t.execute("UPDATE @schema@.account SET balance = balance + 1 WHERE id = $1", [alice.id])
    report = ledger.audit()
    assert not report
    assert {v.check for v in report.violations} >= {"account_matches_journal"}


def test_ledger_calls_release_the_gil(payq_db, funded):
    _, alice, bob = funded
    stop = threading.Event()
    ticks = []

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        for i in range(40):
            payq_db.ledger.transfer(alice, bob, 1, key=f"gil-{i}")
    finally:
        stop.set()
        thread.join()
    assert len(ticks) > 5


def _hammer(dsn, schema, ids, worker, results):
    import random

    db = payq.connect(dsn, schema=schema)
    rng = random.Random(worker)
    errors = {"ok": 0, "business": 0, "other": []}
    for i in range(60):
        a, b = rng.sample(ids["users"], 2)
        try:
            if rng.random() < 0.7:
                db.ledger.transfer(a, b, rng.randint(1, 5000), key=f"p{worker}-{i}",
                                   fee=Fee(bps=50, fixed=1), fee_account=ids["fees"])
            else:
                h = db.ledger.hold(a, rng.randint(1, 3000), key=f"h{worker}-{i}")
                if rng.random() < 0.5:
                    db.ledger.capture(h, target=b, key=f"c{worker}-{i}")
                else:
                    db.ledger.release(h, key=f"r{worker}-{i}")
            errors["ok"] += 1
        except (payq.InsufficientFunds, payq.LimitExceeded):
            errors["business"] += 1
        except Exception as exc:  # pragma: no cover - reported to the parent
            errors["other"].append(repr(exc))
    results.put(errors)


def test_many_processes_keep_the_ledger_sound(payq_db, payq_dsn):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    users = [ledger.account(f"user:{i}", "CNY") for i in range(10)]
    fees = ledger.account("fees", "CNY", "system", deferred_credit=True)
    for u in users:
        ledger.transfer(world, u, "100.00", key=f"fund-{u.id}")
    ids = {"users": [u.id for u in users], "fees": fees.id}
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(payq_dsn, payq_db.schema, ids, w, results)) for w in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o["other"] for o in outcomes] == [[]] * 4
    assert sum(o["ok"] for o in outcomes) > 0
    ledger.fold_pending(fees)
    assert ledger.audit().ok
    total = sum(ledger.get_account(u).balance.minor for u in users) + ledger.get_account(fees).balance.minor
    assert total == 10 * 10000  # conservation: nothing created, nothing lost
    assert all(ledger.get_account(u).available.minor >= 0 for u in users)


def test_custom_currency_defined_elsewhere_is_readable_in_a_new_process(payq_db):
    """A currency defined by one process is loaded by the next one when it
    connects, so reading accounts in it works (the CLI included)."""
    import json
    import secrets
    import string
    import subprocess
    import sys

    code = "PT" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(6))
    script = (
        "import sys, payq\n"
        "db = payq.connect(sys.argv[1], schema=sys.argv[2])\n"
        f"db.ledger.define_currency({code!r}, 0)\n"
        f"world = db.ledger.account('world', {code!r}, 'system', allow_negative=True)\n"
        f"user = db.ledger.account('user:1', {code!r})\n"
        "db.ledger.transfer(world, user, 250, key='points-1')\n"
    )
    subprocess.run([sys.executable, "-c", script, payq_db.dsn, payq_db.schema], check=True, timeout=120)
    listed = subprocess.run([sys.executable, "-m", "payq", "--dsn", payq_db.dsn, "--schema", payq_db.schema,
                             "ledger", "accounts", "--json"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    balances = {a["owner"]: (a["balance"], a["currency"]) for a in json.loads(listed.stdout)}
    assert balances["user:1"] == ("250", code)
