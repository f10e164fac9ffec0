"""The FastAPI example (examples/fastapi_app/): a withdrawal is held,
recorded and its payout enqueued in one asyncpg transaction, idempotent on
the client's ``Idempotency-Key``; an async handler pays it out and payq's
settlement captures the hold (or releases it when the provider refuses)."""

from __future__ import annotations

import asyncio
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("asyncpg")

import payq  # noqa: E402
from payq import Money  # noqa: E402
from payq.testing import fresh_schema  # noqa: E402

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app"
WAIT_S_MAX = 60.0


@pytest.fixture
def example_db(payq_dsn: str) -> Iterator[payq.Database]:
    with fresh_schema(payq_dsn, prefix="fastapi") as db:
        yield db


@pytest.fixture
def client(example_db: payq.Database) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(EXAMPLE_DIR))
    try:
        import walletapi
        import walletapi.tasks  # noqa: F401 (registers the async payout handler)

        settings = walletapi.Settings(example_db.dsn, example_db.schema, f"{example_db.schema}_app")
        asyncio.run(walletapi.init_db(settings))
        with TestClient(walletapi.create_app(settings)) as test_client:
            yield test_client
    finally:
        sys.path.remove(str(EXAMPLE_DIR))


def _settle(db: payq.Database, task_ids: list) -> None:
    worker = payq.Worker(db, queues=["walletapi.payouts"], concurrency=1, poll_interval=timedelta(milliseconds=50),
                         maintenance=False, log=False)
    worker.start()
    done = threading.Event()
    try:
        for _ in range(int(WAIT_S_MAX / 0.05)):
            if all(db.tasks.get(i).state in ("succeeded", "dead") for i in task_ids):
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    assert done.is_set()


def test_withdrawal_is_idempotent_and_settles(client: Any, example_db: payq.Database) -> None:
    topped = client.post("/wallets/alice/topup", json={"amount": "100.00"}, headers={"Idempotency-Key": "top-1"})
    assert topped.status_code == 200 and topped.json()["balance"] == "100.00", topped.text

    body = {"user": "alice", "amount": "30.00", "payout_to": "bank:alice"}
    first = client.post("/withdrawals", json=body, headers={"Idempotency-Key": "wd-1"})
    assert first.status_code == 201, first.text
    replay = client.post("/withdrawals", json=body, headers={"Idempotency-Key": "wd-1"})
    assert replay.status_code == 200 and replay.json() == first.json()
    other = client.post("/withdrawals", json={**body, "amount": "31.00"}, headers={"Idempotency-Key": "wd-1"})
    assert other.status_code == 422
    assert client.get("/wallets/alice").json()["available"] == "70.00"  # held once

    refused = client.post("/withdrawals", json={**body, "payout_to": "invalid:closed"},
                          headers={"Idempotency-Key": "wd-2"})
    assert refused.status_code == 201, refused.text
    too_much = client.post("/withdrawals", json={**body, "amount": "1000.00"}, headers={"Idempotency-Key": "wd-3"})
    assert (too_much.status_code, too_much.json()) == (409, {"error": "insufficient funds"})
    bad = client.post("/withdrawals", json={**body, "amount": "1.005"}, headers={"Idempotency-Key": "wd-4"})
    assert bad.status_code == 400
    missing_key = client.post("/withdrawals", json=body)
    assert missing_key.status_code == 422

    # Only the two accepted withdrawals wrote anything.
    tasks = example_db.tasks.list()
    assert sorted(t.id for t in tasks) == sorted([first.json()["task_id"], refused.json()["task_id"]])
    assert client.get(f"/withdrawals/{first.json()['id']}").json()["status"] == "pending"

    _settle(example_db, [t.id for t in tasks])
    paid = client.get(f"/withdrawals/{first.json()['id']}").json()
    assert paid["status"] == "paid" and paid["provider_ref"].startswith("sim-")
    assert client.get(f"/withdrawals/{refused.json()['id']}").json()["status"] == "failed"
    assert example_db.ledger.get_hold(first.json()["hold_id"]).status == "captured"
    assert example_db.ledger.get_hold(refused.json()["hold_id"]).status == "released"
    alice = example_db.ledger.find_account("user:alice", "EUR", "walletapi")
    assert alice.balance == Money("70.00", "EUR") and alice.available == Money("70.00", "EUR")
    assert example_db.ledger.audit().ok
