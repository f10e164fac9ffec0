"""The ledger on the application's own connection (``payq.ledger.on(conn)``,
``payq.ledger.transfer(conn, ...)``, python/payq/ledger.py): under psycopg2,
psycopg 3, Django and SQLAlchemy (Connection and Session), ledger writes and
the application's own rows commit together, roll back together, and keep
payq's idempotency and error types.

payq's schema is migrated through payq's own connection (``payq_db``), and
accounts are opened and funded there and committed before the application's
transaction begins; balances and the journal are checked there afterwards.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from typing import Any, Dict, Iterator, Tuple

import pytest

import payq
from payq import Account, LedgerTransaction, Money
from payq._native import core
from payq.appconn import savepoint

# The applications are shared with test_appconn.py, and so are the fixtures
# app_open asks for.
from appconn_support import APP_KINDS, app_open, committed
from appconn_support import django_order_model, engine_psycopg, engine_psycopg2  # noqa: F401 (fixtures)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


def legs(transaction: LedgerTransaction) -> Dict[int, Money]:
    return {entry.account_id: entry.amount for entry in transaction.entries}


Accounts = Tuple[Account, Account, Account]


@pytest.fixture
def accounts(payq_db: payq.Database) -> Accounts:
    """world (the outside, may go negative), alice with 100.00 CNY, bob with
    nothing; committed through payq's own connection."""
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    bob = ledger.account("user:bob", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund-alice")
    return world, alice, bob


@pytest.fixture(params=APP_KINDS)
def app(request: Any, payq_dsn: str, payq_db: payq.Database) -> Iterator[Any]:
    """The application, its orders table next to payq's tables (Django: its
    Order model's table)."""
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.orders (v text PRIMARY KEY)")
    application = app_open(request, request.param, payq_dsn, payq_db.schema, "orders")
    yield application
    application.close()


def balances(db: payq.Database, *accounts: Account) -> Tuple[Money, ...]:
    return tuple(db.ledger.get_account(a).balance for a in accounts)


# ---------------------------------------------------------------- commit and rollback


def test_commit_keeps_the_order_and_the_transfer(app: Any, payq_db: payq.Database, accounts: Accounts) -> None:
    _, alice, bob = accounts
    with app.transaction():
        app.insert("order-1")
        done = payq.ledger.transfer(
            app.handle, alice, bob, "12.34", key="order-1", metadata={"order": "order-1"}, schema=app.schema
        )
        # Part of the application's open transaction: seen on its connection,
        # not yet by anyone else.
        assert payq.ledger.on(app.handle, schema=app.schema).find_transaction("order-1") == done
        assert payq_db.ledger.find_transaction("order-1") is None
        assert balances(payq_db, alice, bob) == (cny("100.00"), cny("0"))
    assert committed(payq_db, app.table) == ["order-1"]
    assert balances(payq_db, alice, bob) == (cny("87.66"), cny("12.34"))
    journal = payq_db.ledger.find_transaction("order-1")
    assert journal is not None and journal.id == done.id and not done.replayed
    assert journal.metadata == {"order": "order-1"}
    assert legs(journal) == {alice.id: cny("-12.34"), bob.id: cny("12.34")}
    assert payq_db.ledger.audit().ok


def test_rollback_discards_the_order_and_the_transfer_and_frees_the_key(
    app: Any, payq_db: payq.Database, accounts: Accounts
) -> None:
    _, alice, bob = accounts
    with pytest.raises(RuntimeError, match="after the transfer"):
        with app.transaction():
            app.insert("order-1")
            ledger = payq.ledger.on(app.handle, schema=app.schema)
            ledger.transfer(alice, bob, "12.34", key="order-1")
            assert ledger.get_account(bob).balance == cny("12.34")  # it happened, inside the transaction
            raise RuntimeError("the view failed after the transfer")
    assert committed(payq_db, app.table) == []
    assert payq_db.ledger.find_transaction("order-1") is None
    assert balances(payq_db, alice, bob) == (cny("100.00"), cny("0"))

    with app.transaction():
        app.insert("order-1")
        again = payq.ledger.transfer(app.handle, alice, bob, "12.34", key="order-1", schema=app.schema)
    assert not again.replayed
    assert committed(payq_db, app.table) == ["order-1"]
    assert balances(payq_db, alice, bob) == (cny("87.66"), cny("12.34"))
    journal = payq_db.ledger.find_transaction("order-1")
    assert journal is not None and journal.id == again.id
    assert payq_db.ledger.audit().ok


# ---------------------------------------------------------------- business errors


@pytest.mark.parametrize("savepoint_owner", ["application", "payq"])
def test_insufficient_funds_in_a_savepoint_lets_the_application_commit_the_rest(
    app: Any, payq_db: payq.Database, accounts: Accounts, savepoint_owner: str
) -> None:
    """The failed order's row is written inside the savepoint too, so the
    test also proves the savepoint undid it."""
    _, alice, bob = accounts
    with app.transaction() as executor:
        app.insert("order-1")
        payq.ledger.transfer(app.handle, alice, bob, "12.34", key="order-1", schema=app.schema)
        inner = app.savepoint() if savepoint_owner == "application" else savepoint(executor)
        with pytest.raises(payq.InsufficientFunds):
            with inner:
                app.insert("order-2")
                payq.ledger.transfer(app.handle, alice, bob, "90.00", key="order-2", schema=app.schema)
        app.insert("order-3")
        payq.ledger.transfer(app.handle, alice, bob, "1.00", key="order-3", schema=app.schema)
    assert committed(payq_db, app.table) == ["order-1", "order-3"]
    assert balances(payq_db, alice, bob) == (cny("86.66"), cny("13.34"))
    assert payq_db.ledger.find_transaction("order-2") is None
    assert payq_db.ledger.audit().ok


# ---------------------------------------------------------------- idempotency


def test_same_key_replays_and_a_different_request_conflicts(
    app: Any, payq_db: payq.Database, accounts: Accounts
) -> None:
    _, alice, bob = accounts
    request = dict(key="order-1", metadata={"order": "order-1"})
    with app.transaction():
        ledger = payq.ledger.on(app.handle, schema=app.schema)
        first = ledger.transfer(alice, bob, "12.34", **request)
        within = ledger.transfer(alice, bob, "12.34", **request)  # sees its own uncommitted key
    assert not first.replayed
    assert within.replayed and within.id == first.id

    # The key the application committed is payq's key everywhere.
    on_payq = payq_db.ledger.transfer(alice, bob, "12.34", **request)
    assert on_payq.replayed and on_payq.id == first.id
    with app.transaction():
        later = payq.ledger.transfer(app.handle, alice, bob, "12.34", schema=app.schema, **request)
    assert later.replayed and later.id == first.id and later.metadata == {"order": "order-1"}

    with pytest.raises(payq.IdempotencyConflict):
        with app.transaction():
            payq.ledger.transfer(app.handle, alice, bob, "12.35", schema=app.schema, **request)
    with pytest.raises(payq.IdempotencyConflict):
        payq_db.ledger.transfer(alice, bob, "12.34", key="order-1", metadata={"order": "order-2"})
    assert balances(payq_db, alice, bob) == (cny("87.66"), cny("12.34"))
    assert payq_db.ledger.audit().ok


def backend_waits_on_lock(db: payq.Database, backend_pid: str) -> bool:
    with db.transaction() as t:
        rows = t.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1::int", [backend_pid])
    return rows == [("Lock",)]


@pytest.mark.parametrize("second_amount, outcome", [("12.34", "replayed"), ("12.35", "conflict")])
def test_a_second_request_with_the_key_waits_for_the_first_then_replays_or_conflicts(
    app: Any,
    request: Any,
    payq_dsn: str,
    payq_db: payq.Database,
    accounts: Accounts,
    second_amount: str,
    outcome: str,
) -> None:
    """A double submission: the second application transaction, on another
    connection, reaches the key while the first still holds it."""
    _, alice, bob = accounts
    second = app_open(request, request.node.callspec.params["app"], payq_dsn, payq_db.schema, "orders")
    backend_pids: "queue.Queue[str]" = queue.Queue()
    results: Dict[str, Any] = {}

    def second_request() -> None:
        try:
            with second.transaction() as executor:
                [(backend_pid,)] = core._executor_exec(executor, "SELECT pg_backend_pid()::text AS pid", [])[1]
                backend_pids.put(backend_pid)
                results["transaction"] = payq.ledger.transfer(
                    second.handle, alice, bob, second_amount, key="order-1", schema=second.schema
                )
        except BaseException as error:  # reported to the main thread
            results["error"] = error
            backend_pids.put("")  # wakes the main thread if it still waits for the pid
        finally:
            second.disconnect()

    waiter = threading.Thread(target=second_request)
    with app.transaction():
        app.insert("order-1")
        first = payq.ledger.transfer(app.handle, alice, bob, "12.34", key="order-1", schema=app.schema)
        waiter.start()
        backend_pid = backend_pids.get(timeout=60)
        assert backend_pid, results
        polls_max = 100_000
        for _ in range(polls_max):
            if backend_waits_on_lock(payq_db, backend_pid):
                break
            assert waiter.is_alive(), results  # it cannot end before the first transaction does
        else:
            raise AssertionError("the second request never waited for the first")
    waiter.join(timeout=60)
    assert not waiter.is_alive()

    if outcome == "replayed":
        assert "error" not in results, results["error"]
        assert results["transaction"].replayed and results["transaction"].id == first.id
    else:
        assert isinstance(results.get("error"), payq.IdempotencyConflict), results
    assert committed(payq_db, app.table) == ["order-1"]
    assert balances(payq_db, alice, bob) == (cny("87.66"), cny("12.34"))
    assert payq_db.ledger.audit().ok


# ---------------------------------------------------------------- holds


def test_withdrawal_hold_and_capture_commit_with_the_order(
    app: Any, payq_db: payq.Database, accounts: Accounts
) -> None:
    _, alice, _ = accounts
    clearing = payq_db.ledger.account("provider-clearing", "CNY", "system", allow_negative=True)
    with app.transaction():
        app.insert("withdrawal-1")
        hold = payq.ledger.hold(app.handle, alice, "30.00", key="withdrawal-1/hold", schema=app.schema)
        assert payq.ledger.on(app.handle, schema=app.schema).get_account(alice).available == cny("70.00")
        assert payq_db.ledger.get_account(alice).available == cny("100.00")  # not committed yet
        captured = payq.ledger.capture(
            app.handle, hold, target=clearing, key="withdrawal-1/capture", schema=app.schema
        )
    assert committed(payq_db, app.table) == ["withdrawal-1"]
    assert payq_db.ledger.get_hold(hold.id).status == "captured"
    after = payq_db.ledger.get_account(alice)
    assert (after.balance, after.held, after.available) == (cny("70.00"), cny("0"), cny("70.00"))
    assert payq_db.ledger.get_account(clearing).balance == cny("30.00")
    journal = payq_db.ledger.find_transaction("withdrawal-1/capture")
    assert journal is not None and journal.id == captured.id and journal.hold_id == hold.id
    assert legs(journal) == {alice.id: cny("-30.00"), clearing.id: cny("30.00")}
    assert payq_db.ledger.audit().ok


def test_rolled_back_withdrawal_leaves_no_hold_and_frees_its_keys(
    app: Any, payq_db: payq.Database, accounts: Accounts
) -> None:
    _, alice, _ = accounts
    clearing = payq_db.ledger.account("provider-clearing", "CNY", "system", allow_negative=True)
    with pytest.raises(RuntimeError, match="provider refused"):
        with app.transaction():
            app.insert("withdrawal-1")
            ledger = payq.ledger.on(app.handle, schema=app.schema)
            hold = ledger.hold(alice, "30.00", key="withdrawal-1/hold")
            ledger.capture(hold, target=clearing, key="withdrawal-1/capture")
            raise RuntimeError("provider refused the payout")
    assert committed(payq_db, app.table) == []
    after = payq_db.ledger.get_account(alice)
    assert (after.balance, after.held) == (cny("100.00"), cny("0"))
    assert payq_db.ledger.find_transaction("withdrawal-1/capture") is None

    with app.transaction():
        ledger = payq.ledger.on(app.handle, schema=app.schema)
        hold = ledger.hold(alice, "30.00", key="withdrawal-1/hold")
        captured = ledger.capture(hold, target=clearing, key="withdrawal-1/capture")
    assert not hold.replayed and not captured.replayed
    assert payq_db.ledger.get_account(alice).balance == cny("70.00")
    assert payq_db.ledger.audit().ok


# ---------------------------------------------------------------- Django on psycopg2

DJANGO_ON_PSYCOPG2 = """
import sys
sys.modules["psycopg"] = None  # hidden, so Django falls back to psycopg2
import django, payq, payq.ledger
from django.conf import settings
from psycopg2.extensions import parse_dsn

dsn, schema, alice, bob = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = parse_dsn(dsn)
settings.configure(USE_TZ=True, DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"], "USER": params.get("user", ""),
    "PASSWORD": params.get("password", ""), "HOST": params.get("host", ""), "PORT": params.get("port", "")}})
django.setup()
from django.db import connection, transaction

def order(reference):
    with connection.cursor() as cursor:
        cursor.execute(f'INSERT INTO "{schema}".orders (v) VALUES (%s)', [reference])

with transaction.atomic():
    order("order-1")
    payq.ledger.transfer(connection, alice, bob, "12.34", key="order-1", schema=schema)
    assert type(connection.connection).__module__.startswith("psycopg2")
try:
    with transaction.atomic():
        order("order-2")
        payq.ledger.transfer(connection, alice, bob, "12.34", key="order-2", schema=schema)
        raise RuntimeError("the view failed after the transfer")
except RuntimeError:
    pass
with transaction.atomic():
    try:
        with transaction.atomic():
            order("order-3")
            payq.ledger.transfer(connection, alice, bob, "90.00", key="order-3", schema=schema)
    except payq.InsufficientFunds:
        pass
    order("order-4")
    payq.ledger.transfer(connection, alice, bob, "1.00", key="order-4", schema=schema)
print("ok")
"""


def test_django_on_psycopg2_keeps_the_ledger_in_its_atomic_blocks(
    payq_dsn: str, payq_db: payq.Database, accounts: Accounts
) -> None:
    """Django prefers psycopg 3 when both are installed; a process of its own
    runs the ledger on its psycopg2 backend."""
    pytest.importorskip("django")
    _, alice, bob = accounts
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.orders (v text PRIMARY KEY)")
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_ON_PSYCOPG2, payq_dsn, payq_db.schema, str(alice.id), str(bob.id)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert committed(payq_db, "@schema@.orders") == ["order-1", "order-4"]
    assert balances(payq_db, alice, bob) == (cny("86.66"), cny("13.34"))
    assert [payq_db.ledger.find_transaction(f"order-{n}") is None for n in (1, 2, 3, 4)] == [False, True, True, False]
    assert payq_db.ledger.audit().ok


# ---------------------------------------------------------------- one key, one payout


def test_withdrawal_retried_on_the_application_connection_makes_one_payout_task(
    app: Any, payq_db: payq.Database, accounts: Accounts
) -> None:
    # A double click: the withdrawal endpoint runs twice for one request.
    _, alice, _ = accounts
    clearing = payq_db.ledger.account("provider-clearing", "CNY", "system", allow_negative=True)
    results = []
    for _ in range(2):
        with app.transaction():
            hold = payq.ledger.hold(app.handle, alice, "50.00", key="wd-8/hold", schema=app.schema)
            results.append(payq.outbox.enqueue(app.handle, "payout", {"to": "x"}, queue="payouts",
                                               idempotency_key="wd-8", schema=app.schema,
                                               settle=payq.Settle.capture(hold, into=clearing)))
    assert results[0].created and not results[1].created
    assert results[1].task_id == results[0].task_id
    assert len(payq_db.tasks.list(queue="payouts")) == 1
    # A different request under the key is refused inside the application's
    # transaction, and the transaction can still be rolled back cleanly.
    with pytest.raises(payq.IdempotencyConflict):
        with app.transaction():
            hold = payq.ledger.hold(app.handle, alice, "20.00", key="wd-8/another-hold", schema=app.schema)
            payq.outbox.enqueue(app.handle, "payout", {"to": "y"}, queue="payouts", idempotency_key="wd-8",
                                schema=app.schema, settle=payq.Settle.capture(hold, into=clearing))
    assert len(payq_db.tasks.list(queue="payouts")) == 1
    assert payq_db.ledger.get_account(alice).held == cny("50.00")
    assert payq_db.ledger.audit().ok
