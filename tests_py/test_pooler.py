"""payq behind a real pgbouncer (issue 14): with ``pooler="transaction"``
every part of payq works through a transaction-mode pooler (ledger,
enqueue, worker with its maintenance election, cron, inbox, the demo);
without the setting, the pooler's symptom is a ConfigError that names it.
pgbouncer comes from Debian (``tools/run`` installs it)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Iterator, List

import pytest

import payq
from payq import Settle
from payq.demo import run_demo
from payq.inbox import CallbackReceiver
from payq.testing import FakeProvider, fresh_schema, wait_until
from payq.testing.pgbouncer import PgBouncer, pgbouncer_binary
from payq.worker import Registry, Worker

pytestmark = pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed")




@pytest.fixture(scope="module")
def bouncer(payq_dsn: str) -> Iterator[PgBouncer]:
    with PgBouncer(payq_dsn, pool_mode="transaction", pool_size=4) as pooler:
        yield pooler


@pytest.fixture
def pooled(payq_dsn: str, bouncer: PgBouncer) -> Iterator[payq.Database]:
    """A migrated schema, reached through the transaction-mode pooler."""
    with fresh_schema(payq_dsn) as direct:
        yield payq.connect(bouncer.dsn, schema=direct.schema, pooler="transaction")


def test_without_the_setting_the_pooler_symptom_names_it(payq_dsn: str) -> None:
    # One server connection shared by two clients: the second meets the
    # first's prepared statements.
    with fresh_schema(payq_dsn) as direct, PgBouncer(payq_dsn, pool_size=1) as single:
        first = payq.connect(single.dsn, schema=direct.schema, migrate=False)
        world = first.ledger.account("world", "CNY", "s", allow_negative=True)
        with pytest.raises(payq.ConfigError) as refused:
            second = payq.connect(single.dsn, schema=direct.schema, migrate=False)
            second.ledger.account("alice", "CNY")
        assert 'pooler="transaction"' in str(refused.value)
        assert "PAYQ_POOLER" in str(refused.value)
        assert first.ledger.get_account(world).balance == payq.Money(0, "CNY")


def test_setting_comes_from_the_environment(payq_dsn: str, bouncer: PgBouncer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYQ_POOLER", "transaction")
    with fresh_schema(payq_dsn) as direct:
        db = payq.connect(bouncer.dsn, schema=direct.schema)
        assert db.pooler == "transaction"
        assert db.listen_dsn is None  # workers poll unless told where to LISTEN
    monkeypatch.setenv("PAYQ_POOLER", "sideways")
    with pytest.raises(payq.ConfigError):
        payq.connect(bouncer.dsn, schema=direct.schema, migrate=False)


def test_a_thousand_concurrent_transfers_and_enqueues_all_commit(pooled: payq.Database) -> None:
    ledger = pooled.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    wallets = [ledger.account(f"user:{i}", "CNY") for i in range(8)]
    for wallet in wallets:
        ledger.transfer(world, wallet, "1000.00", key=f"fund/{wallet.id}")
    errors: List[BaseException] = []

    def work(index: int) -> None:
        for n in range(125):
            try:
                with pooled.transaction() as t:
                    t.ledger.transfer(wallets[index], world, "1.00", key=f"pay/{index}/{n}")
                    t.enqueue("receipt.send", {"n": n}, queue="receipts")
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert pooled.tasks.stats()["receipts"]["pending"] == 1000
    assert all(ledger.get_account(w).balance == payq.Money("875.00", "CNY") for w in wallets)
    assert ledger.audit().ok


@pytest.mark.parametrize("listen", [False, True], ids=["polling", "listen_dsn"])
def test_worker_settles_withdrawals_and_leads_maintenance_through_the_pooler(
        payq_dsn: str, bouncer: PgBouncer, listen: bool) -> None:
    with fresh_schema(payq_dsn) as direct:
        db = payq.connect(bouncer.dsn, schema=direct.schema, pooler="transaction",
                          listen_dsn=payq_dsn if listen else None)
        assert db.listen_dsn == (payq_dsn if listen else None)
        ledger = db.ledger
        world = ledger.account("world", "CNY", "system", allow_negative=True)
        clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
        wallet = ledger.account("user:1", "CNY")
        ledger.transfer(world, wallet, "100.00", key="fund")
        holds = []
        for n in range(20):
            with db.transaction() as t:
                hold = t.ledger.hold(wallet, "1.00", key=f"wd-{n}/hold", expires_in=timedelta(seconds=1))
                t.enqueue("payout", {"n": n}, queue="payouts", idempotency_key=f"wd-{n}",
                          settle=Settle.capture(hold, into=clearing))
                holds.append(hold)
        registry = Registry()
        registry.handler("payout")(lambda task: {"paid": task.payload["n"]})
        worker = Worker(db, queues=["payouts"], registry=registry, concurrency=3,
                        poll_interval=timedelta(milliseconds=100), maintenance_interval=timedelta(milliseconds=100),
                        log=False)
        worker.start()
        try:
            assert wait_until(lambda: all(ledger.get_hold(h.id).status == "captured" for h in holds))
            assert wait_until(lambda: bool(worker.stats()["maintenance_leader"]))
        finally:
            worker.stop()
        assert ledger.get_account(clearing).balance == payq.Money("20.00", "CNY")
        assert ledger.audit().ok


def test_cron_and_inbox_through_the_pooler(pooled: payq.Database) -> None:
    from payq._native import core

    pooled.queues.cron("nightly", "* * * * *", "report.daily", {"kind": "daily"}, queue="reports")
    with pooled.transaction() as t:  # made two minutes ago: a slot is due now
        t.execute("UPDATE @schema@.cron_entry SET created_at = now() - interval '2 minutes'")
    assert core.outbox_cron_fire(pooled._core) == 1
    assert core.outbox_cron_fire(pooled._core) == 0  # one slot, fired once
    assert pooled.tasks.stats()["reports"]["pending"] == 1

    secret = "pooled-inbox"
    ledger = pooled.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("provider", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:1", "CNY")
    ledger.transfer(world, wallet, "10.00", key="fund")
    with pooled.transaction() as t:
        hold = t.ledger.hold(wallet, "3.00", key="hold/wd-cb")
        task = t.enqueue("payout", {}, queue="provider", idempotency_key="wd-cb",
                         settle=Settle.capture(hold, into=clearing))
    receiver = CallbackReceiver(pooled, provider="fake", secret=secret)
    body = json.dumps({"event_id": "e-1", "key": "wd-cb", "status": "SUCCESS"}).encode()
    status, _ = receiver.handle(body, {"X-Signature": FakeProvider.signature(body, secret)})
    assert status == 200
    # Never sent by payq, so the callback is recorded and ignored (docs/inbox.md).
    assert pooled.tasks.get(task.task_id).state == "pending"
    with pooled.transaction() as t:
        assert t.execute("SELECT count(*) FROM @schema@.inbox_event")[0][0] == "1"
    assert ledger.get_hold(hold.id).status == "active"


def test_demo_is_clean_through_the_pooler(pooled: payq.Database) -> None:
    report = run_demo(pooled, wallet_count=10, withdrawal_count=120, thread_count=4, say=lambda _: None)
    assert report.ok, report


def test_session_mode_pooler_with_the_transaction_setting_works(payq_dsn: str) -> None:
    with fresh_schema(payq_dsn) as direct, PgBouncer(payq_dsn, pool_mode="session", pool_size=4) as session:
        db = payq.connect(session.dsn, schema=direct.schema, pooler="transaction")
        world = db.ledger.account("world", "CNY", "system", allow_negative=True)
        alice = db.ledger.account("alice", "CNY")
        db.ledger.transfer(world, alice, "5.00", key="fund")
        assert db.ledger.get_account(alice).balance == payq.Money("5.00", "CNY")
