"""The server restarts under a busy application and a busy worker (issue 14,
capability 1): connections that died while idle are replaced before use,
so no error reaches the application once the server is back; the worker
rides the outage out with one log line each way, and no task is lost."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from datetime import timedelta
from typing import Iterator, List

import pytest

import payq
from payq.embedded import EmbeddedServer
from payq.testing import wait_until
from payq.worker import Registry, Worker

WAIT_S = 60.0


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    base = tempfile.mkdtemp(prefix="payq-restart-", dir="/tmp")
    os.chmod(base, 0o755)
    embedded = EmbeddedServer(os.path.join(base, "home"), durable=False)
    embedded.remove_when_process_exits()
    embedded.up()
    try:
        yield embedded
    finally:
        embedded.down()
        shutil.rmtree(base, ignore_errors=True)



def test_restart_under_a_busy_application_and_worker_loses_nothing(server: EmbeddedServer,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    db = payq.connect(server.dsn, migrate=True)
    ledger = db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    wallets = [ledger.account(f"user:{i}", "CNY") for i in range(4)]
    for wallet in wallets:
        ledger.transfer(world, wallet, "100.00", key=f"fund/{wallet.id}")

    registry = Registry()
    done: List[int] = []
    done_lock = threading.Lock()

    @registry.handler("receipt")
    def receipt(task: payq.TaskRun) -> dict:
        with done_lock:
            done.append(task.payload["n"])
        return {"sent": True}

    application_errors: List[BaseException] = []
    enqueued: List[int] = []

    def application(phase: int, count: int) -> None:
        # Four application threads, each with its own pooled connection.
        def run(index: int) -> None:
            for n in range(count):
                number = phase * 10_000 + index * 1_000 + n
                try:
                    with db.transaction() as t:
                        t.ledger.transfer(wallets[index], world, "0.01", key=f"pay/{number}")
                        t.enqueue("receipt", {"n": number}, queue="receipts")
                    with done_lock:
                        enqueued.append(number)
                except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                    application_errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)

    # The worker logs JSON lines to the process's stderr (captured by capfd).
    worker = Worker(db, queues=["receipts"], registry=registry, concurrency=3,
                    poll_interval=timedelta(milliseconds=50), maintenance_interval=timedelta(milliseconds=200))
    worker.start()
    try:
        application(1, 25)
        assert wait_until(lambda: len(done) == len(enqueued), WAIT_S)
        # Every pooled connection is idle now: restart the server.
        server.down()
        server.up()
        application(2, 25)
        assert wait_until(lambda: len(done) >= len(enqueued), WAIT_S)
    finally:
        worker.stop()

    assert application_errors == [], application_errors
    assert sorted(done) == sorted(enqueued) and len(enqueued) == 200  # none lost, none twice
    assert all(ledger.get_account(w).balance == payq.Money("99.50", "CNY") for w in wallets)
    assert ledger.audit().ok
    events = [json.loads(line)["event"] for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    # The outage, if the worker saw one, is one line each way, not one per retry.
    assert events.count("database_unavailable") <= 1
    assert events.count("database_available") == events.count("database_unavailable")
    assert "worker_thread_failed" not in events
