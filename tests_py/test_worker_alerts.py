"""payq's alerts (``payq.alert`` on ``payq.alerts``) do not pile up: a
worker serves them, logs each as a JSON line with a default handler when the
application registered none, and says so once when it starts."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any, Callable, Dict, List

import pytest

import payq
from payq.worker import Registry, Worker

ALERT_QUEUE = "payq.alerts"


def _run_until(db: payq.Database, registry: Registry, predicate: Callable[[], bool], **options: Any) -> bool:
    """Run a worker until ``predicate`` holds, at most 30 s."""
    worker = Worker(db, queues=["jobs"], registry=registry, concurrency=2, poll_interval=timedelta(milliseconds=50),
                    maintenance=False, **options)
    worker.start()
    done = threading.Event()
    try:
        for _ in range(600):
            if predicate():
                done.set()
                break
            done.wait(0.05)
    finally:
        worker.stop()
    return done.is_set()


def _dead_task(db: payq.Database, registry: Registry) -> int:
    @registry.handler("doomed")
    def doomed(task: payq.TaskRun) -> None:
        raise payq.Fail("account closed at the provider")

    return db.enqueue("doomed", {"n": 1}, queue="jobs").task_id


def _alerts_done(db: payq.Database) -> Callable[[], bool]:
    def done() -> bool:
        alerts = db.tasks.list(queue=ALERT_QUEUE)
        return bool(alerts) and all(a.state == "succeeded" for a in alerts)

    return done


def _log(err: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_alerts_without_a_handler_are_logged_and_succeed(payq_db: payq.Database, capfd: Any) -> None:
    registry = Registry()
    dead = _dead_task(payq_db, registry)
    assert _run_until(payq_db, registry, _alerts_done(payq_db))
    [alert] = payq_db.tasks.list(queue=ALERT_QUEUE)
    assert alert.payload["task_id"] == dead and alert.result["handled_by"] == "payq default alert handler"
    log = _log(capfd.readouterr().err)
    [said] = [e for e in log if e["event"] == "alert_handler_default"]
    assert "no payq.alert handler is registered" in said["detail"]
    [logged] = [e for e in log if e["event"] == "alert"]
    assert logged["level"] == "warning" and logged["task_id"] == alert.id
    assert logged["alert"]["task_id"] == dead and logged["alert"]["reason"] == alert.payload["reason"]
    assert logged["ts"].endswith("Z") and logged["worker"]


def test_an_application_alert_handler_overrides_the_default(payq_db: payq.Database, capfd: Any) -> None:
    registry = Registry()
    paged: List[int] = []

    @registry.handler("payq.alert")
    def page(task: payq.TaskRun) -> str:
        paged.append(task.payload["task_id"])
        return "paged"

    dead = _dead_task(payq_db, registry)
    assert _run_until(payq_db, registry, _alerts_done(payq_db))
    assert paged == [dead]
    [alert] = payq_db.tasks.list(queue=ALERT_QUEUE)
    assert alert.result == "paged"
    log = _log(capfd.readouterr().err)
    assert [e for e in log if e["event"] in ("alert_handler_default", "alert")] == []


def test_a_worker_can_leave_alerts_to_others(payq_db: payq.Database) -> None:
    registry = Registry()
    dead = _dead_task(payq_db, registry)
    assert _run_until(payq_db, registry, lambda: payq_db.tasks.get(dead).state == "dead", alerts=False)
    [alert] = payq_db.tasks.list(queue=ALERT_QUEUE)
    assert alert.state == "pending"
    with pytest.raises(payq.InvalidArgument):
        Worker(payq_db, registry=registry, alerts="yes")
