"""Prometheus metrics: the text payq renders, the HTTP endpoint, and a real
``payq worker --metrics-port`` process scraped while it works."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Dict, Tuple

import pytest

import payq
from payq.metrics import CONTENT_TYPE, MetricsServer, render

TESTS_DIR = Path(__file__).resolve().parent
_SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _samples(text: str) -> Dict[Tuple[str, str], float]:
    """{(name, labels): value}; also checks every family is declared once."""
    declared = set()
    out: Dict[Tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in declared, f"{name} declared twice"
            declared.add(name)
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            family = match.group(1)
            for suffix in _HISTOGRAM_SUFFIXES:
                if family.endswith(suffix) and family[: -len(suffix)] in declared:
                    family = family[: -len(suffix)]
            assert family in declared, f"sample before its TYPE: {line!r}"
            out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out


def test_render_reports_depth_lag_pause_and_ledger(payq_db: payq.Database) -> None:
    db = payq_db
    world = db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = db.ledger.account("alice", "CNY")
    db.ledger.transfer(world, alice, "10.00", key="m-1")
    db.ledger.transfer(world, alice, "5.00", key="m-2")
    db.enqueue("sms.send", {"to": "a"}, queue="sms")
    db.enqueue("sms.send", {"to": "b"}, queue="sms")
    db.enqueue("sms.send", {"to": "c"}, queue="sms", delay=timedelta(hours=1))
    db.enqueue("crm.push", {}, queue="crm")
    db.queues.pause("crm")

    samples = _samples(render(db))
    assert samples[("payq_queue_tasks", '{queue="sms",state="pending"}')] == 3
    assert samples[("payq_queue_runnable_tasks", '{queue="sms"}')] == 2
    assert samples[("payq_queue_tasks", '{queue="crm",state="pending"}')] == 1
    assert samples[("payq_queue_paused", '{queue="crm"}')] == 1
    assert samples[("payq_queue_paused", '{queue="sms"}')] == 0
    assert samples[("payq_queue_oldest_runnable_age_seconds", '{queue="sms"}')] >= 0
    assert samples[("payq_ledger_transactions_total", "")] == 2
    # Without a worker, no worker metrics.
    assert not any(name.startswith("payq_worker_") for name, _ in samples)


def test_metrics_server_serves_text_and_refuses_other_paths(payq_db: payq.Database) -> None:
    payq_db.enqueue("sms.send", {}, queue="sms")
    with MetricsServer(lambda: render(payq_db)) as server:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE
            body = response.read().decode()
        assert _samples(body)[("payq_queue_tasks", '{queue="sms",state="pending"}')] == 1
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert missing.value.code == 404


def test_a_failing_scrape_answers_503_and_the_server_lives_on() -> None:
    calls = []

    def render_metrics() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise payq.DatabaseError("database is down")
        return "# HELP x y\n# TYPE x gauge\nx 1\n"

    with MetricsServer(render_metrics) as server:
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(server.url, timeout=10)
        assert failed.value.code == 503
        assert b"database is down" in failed.value.read()
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.read() == b"# HELP x y\n# TYPE x gauge\nx 1\n"


def test_a_bug_in_rendering_answers_500() -> None:
    def render_metrics() -> str:
        raise KeyError("no such counter")

    with MetricsServer(render_metrics) as server:
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(server.url, timeout=10)
        assert failed.value.code == 500
        assert b"KeyError" in failed.value.read()


def test_stop_is_safe_before_start_and_twice() -> None:
    server = MetricsServer(lambda: "")
    server.stop()  # never started: returns at once
    server.stop()
    with MetricsServer(lambda: "") as started:
        started.start()  # already serving: no second thread
    started.stop()  # after __exit__ stopped it


def test_bad_port_is_a_typed_error() -> None:
    with pytest.raises(payq.InvalidArgument):
        MetricsServer(lambda: "", port=70000)


def test_worker_process_serves_its_counters(payq_db: payq.Database) -> None:
    db = payq_db
    for n in range(5):
        db.enqueue("metrics.ok", {"n": n}, queue="m")
    db.enqueue("metrics.flaky", {}, queue="m")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, "worker",
               "--app", "workerapp.metrics_app", "--queues", "m", "--concurrency", "2", "--poll-ms", "50",
               "--metrics-port", "0"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        url = None
        assert worker.stderr is not None
        for line in worker.stderr:
            if '"worker_ready"' in line:
                url = json.loads(line)["metrics"]
                break
        assert url, "the worker never said it was ready"

        # The worker counts an outcome just after its completion commits, so
        # the scrape is repeated until the counters have caught up with the
        # database (or the deadline passes and the asserts below say what is off).
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url, timeout=10) as response:
                samples = _samples(response.read().decode())
            worker_label = next(labels for name, labels in samples if name == "payq_worker_claimed_total")
            worker_id = re.search(r'worker="([^"]*)"', worker_label).group(1)  # type: ignore[union-attr]
            counted = sum(value for (name, labels), value in samples.items()
                          if name == "payq_worker_tasks_total" and f'worker="{worker_id}"' in labels)
            done = db.tasks.stats().get("m", {})
            settled = done.get("succeeded") == 5 and done.get("dead") == 1
            if (settled and counted >= 6) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert samples[("payq_worker_claimed_total", f'{{worker="{worker_id}"}}')] == 6
        assert samples[("payq_worker_tasks_total", f'{{worker="{worker_id}",outcome="success"}}')] == 5
        assert samples[("payq_worker_tasks_total", f'{{worker="{worker_id}",outcome="fail"}}')] == 1
        assert samples[("payq_queue_tasks", '{queue="m",state="dead"}')] == 1
        histogram = "payq_worker_attempt_duration_seconds"
        assert samples[(histogram + "_count", f'{{worker="{worker_id}"}}')] == 6
        assert samples[(histogram + "_bucket", f'{{worker="{worker_id}",le="+Inf"}}')] == 6
        buckets = [value for (name, labels), value in samples.items() if name == histogram + "_bucket"]
        assert buckets == sorted(buckets), "buckets are cumulative"
        assert samples[("payq_worker_leases_rescued_total", f'{{worker="{worker_id}"}}')] == 0
        assert samples[("payq_queue_tasks", '{queue="m",state="pending"}')] == 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
