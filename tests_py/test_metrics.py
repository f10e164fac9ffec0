"""Prometheus metrics: the series payq exports (parsed with
prometheus_client's own parser), the HTTP endpoint, and real ``payq worker
--metrics-port`` processes scraped while they work."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

import payq
from payq import metrics
from payq._native import core
from payq.metrics import CONTENT_TYPE, DatabaseCollector, MetricsServer, render

TESTS_DIR = Path(__file__).resolve().parent
WAIT_S_MAX = 60.0
POLL_S = 0.05

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]
StartWorker = Callable[[], Tuple[subprocess.Popen, dict]]


def _families(text: str) -> Dict[str, object]:
    """{family name: family}; also checks that each family comes once."""
    out: Dict[str, object] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in out, f"{family.name} twice"
        out[family.name] = family
    return out


def _samples(text: str) -> Samples:
    """{(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _names(samples: Samples) -> set:
    return {name for name, _ in samples}


def _collect(collector: DatabaseCollector) -> Samples:
    """One collect of ``collector`` as samples."""
    out: Samples = {}
    for family in collector.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


# ---------------------------------------------------------------- in process


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
    assert _get(samples, "payq_queue_tasks", queue="sms", state="pending") == 3
    assert _get(samples, "payq_queue_runnable_tasks", queue="sms") == 2
    assert _get(samples, "payq_queue_tasks", queue="crm", state="pending") == 1
    assert _get(samples, "payq_queue_paused", queue="crm") == 1
    assert _get(samples, "payq_queue_paused", queue="sms") == 0
    assert _get(samples, "payq_queue_oldest_runnable_age_seconds", queue="sms") >= 0
    assert _get(samples, "payq_ledger_transactions_total") == 2
    # Without a worker, no worker metrics.
    assert not any(name.startswith("payq_worker_") for name in _names(samples))


def test_a_rolled_back_ledger_transaction_is_not_counted(payq_db: payq.Database) -> None:
    db = payq_db
    world = db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = db.ledger.account("alice", "CNY")
    db.ledger.transfer(world, alice, "10.00", key="kept")
    with pytest.raises(RuntimeError):
        with db.transaction() as t:
            t.ledger.transfer(world, alice, "5.00", key="rolled-back")
            raise RuntimeError("the application failed after the transfer")
    assert _get(_samples(render(db)), "payq_ledger_transactions_total") == 1
    db.ledger.transfer(world, alice, "1.00", key="kept-too")
    assert _get(_samples(render(db)), "payq_ledger_transactions_total") == 2


def test_counters_count_commits_in_any_order_and_never_rollbacks(payq_db: payq.Database,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction that took its ids first but commits last is counted
    when it commits, even after the ids above it settled; one rolled back
    is never counted."""
    clock = itertools.count(1000.0, 2.0)  # each reading 2 s after the one before: marks pair at once
    monkeypatch.setattr(metrics, "_clock", lambda: next(clock))
    db = payq_db
    world = db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = db.ledger.account("alice", "CNY")
    bank = db.ledger.account("bank", "CNY", "system", allow_negative=True)
    bob = db.ledger.account("bob", "CNY")
    collector = DatabaseCollector(db, cache_s=0)
    # Takes a task id and a ledger transaction id now, and commits last
    # (other accounts, so that the transfers below do not wait for it).
    slow = db.transaction()
    slow.enqueue("late.kind", {}, queue="late")
    slow.ledger.transfer(bank, bob, "1.00", key="late")
    for n in range(3):
        db.enqueue("early.kind", {"n": n}, queue="early")
        db.ledger.transfer(world, alice, "1.00", key=f"early-{n}")
        _collect(collector)  # each collect may settle what the one before saw
    samples = _collect(collector)
    assert _get(samples, "payq_tasks_enqueued_total", queue="early", kind="early.kind") == 3
    assert ("payq_tasks_enqueued_total", (("kind", "late.kind"), ("queue", "late"))) not in samples
    assert _get(samples, "payq_ledger_transactions_total") == 3
    slow.commit()
    with pytest.raises(RuntimeError):
        with db.transaction() as t:
            t.enqueue("gone.kind", {}, queue="early")
            raise RuntimeError("rolled back")
    for _ in range(3):
        samples = _collect(collector)
    assert _get(samples, "payq_tasks_enqueued_total", queue="late", kind="late.kind") == 1
    assert _get(samples, "payq_tasks_enqueued_total", queue="early", kind="early.kind") == 3
    assert ("payq_tasks_enqueued_total", (("kind", "gone.kind"), ("queue", "early"))) not in samples
    assert _get(samples, "payq_ledger_transactions_total") == 4


def test_enqueued_tasks_are_counted_by_queue_and_kind_from_when_the_exporter_started(
        payq_db: payq.Database) -> None:
    db = payq_db
    db.enqueue("before.start", {}, queue="a")
    collector = DatabaseCollector(db, cache_s=0)
    db.enqueue("sms.send", {"n": 1}, queue="a")
    db.enqueue("sms.send", {"n": 2}, queue="a")
    with db.transaction() as t:
        t.enqueue("crm.push", {}, queue="b")
    samples = _collect(collector)
    assert _get(samples, "payq_tasks_enqueued_total", queue="a", kind="sms.send") == 2
    assert _get(samples, "payq_tasks_enqueued_total", queue="b", kind="crm.push") == 1
    assert ("payq_tasks_enqueued_total", (("kind", "before.start"), ("queue", "a"))) not in samples


def test_database_values_are_reused_within_the_cache_time(payq_db: payq.Database,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(metrics, "_clock", lambda: now[0])
    db = payq_db
    collector = DatabaseCollector(db, cache_s=5)
    db.enqueue("sms.send", {}, queue="a")
    assert _get(_collect(collector), "payq_queue_tasks", queue="a", state="pending") == 1
    db.enqueue("sms.send", {}, queue="a")
    now[0] += 4.9  # a scrape storm within the cache time: no new reading
    assert _get(_collect(collector), "payq_queue_tasks", queue="a", state="pending") == 1
    now[0] += 0.2
    samples = _collect(collector)
    assert _get(samples, "payq_queue_tasks", queue="a", state="pending") == 2
    assert _get(samples, "payq_tasks_enqueued_total", queue="a", kind="sms.send") == 2


def test_only_the_maintenance_leader_exports_database_series(payq_db: payq.Database) -> None:
    db = payq_db
    db.enqueue("sms.send", {}, queue="a")
    leader = DatabaseCollector(db, leader_of="host:1:aaaaaa", cache_s=0)
    other = DatabaseCollector(db, leader_of="host:2:bbbbbb", cache_s=0)
    # Nobody holds the lease yet: nobody exports.
    assert not any(name.startswith(("payq_queue_", "payq_ledger_", "payq_tasks_")) for name in _names(_collect(leader)))
    with db.transaction() as t:
        t.execute("INSERT INTO @schema@.maintenance_lease (holder, expires_at) "
                  "VALUES ('host:1:aaaaaa', now() + interval '1 minute')")
    assert _get(_collect(leader), "payq_queue_tasks", queue="a", state="pending") == 1
    other_names = _names(_collect(other))
    assert not any(name.startswith(("payq_queue_", "payq_ledger_", "payq_tasks_")) for name in other_names)
    assert _get(_collect(other), "payq_database_up") == 1
    with db.transaction() as t:  # the lease ran out
        t.execute("UPDATE @schema@.maintenance_lease SET expires_at = now() - interval '1 second'")
    assert "payq_queue_tasks" not in _names(_collect(leader))


def test_a_database_error_is_reported_and_the_process_series_stay(payq_db: payq.Database) -> None:
    db = payq.connect(payq_db.dsn, schema="no_such_schema", migrate=False)
    collector = DatabaseCollector(db, cache_s=0)
    samples = _collect(collector)
    assert _get(samples, "payq_database_up") == 0
    assert "payq_queue_tasks" not in _names(samples)
    with pytest.raises(payq.Error):
        render(db)


def test_build_info_names_the_package_and_its_core(payq_db: payq.Database) -> None:
    samples = _samples(render(payq_db))
    assert _get(samples, "payq_build_info", version=payq.__version__,
                core=core.library_versions()["payq"]) == 1


def test_bad_collector_options_are_typed_errors(payq_db: payq.Database) -> None:
    with pytest.raises(payq.InvalidArgument):
        DatabaseCollector(payq_db, cache_s=-1)
    with pytest.raises(payq.InvalidArgument):
        DatabaseCollector(payq_db, cache_s=True)
    with pytest.raises(payq.InvalidArgument):
        DatabaseCollector(payq_db, leader_of="")
    with pytest.raises(payq.InvalidArgument):
        metrics.WorkerCollector(object())
    with pytest.raises(payq.InvalidArgument):
        MetricsServer(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- HTTP


def test_metrics_server_serves_a_registry_and_refuses_other_paths(payq_db: payq.Database) -> None:
    payq_db.enqueue("sms.send", {}, queue="sms")
    with MetricsServer(metrics.registry(payq_db, cache_s=0)) as server:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
        samples = _samples(body)
        assert _get(samples, "payq_queue_tasks", queue="sms", state="pending") == 1
        assert _get(samples, "process_resident_memory_bytes") > 0
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(urllib.request.Request(server.url, data=b"x", method="POST"), timeout=10)
        assert posted.value.code == 405
        posted.value.close()


def test_metrics_server_serves_text_of_a_callable() -> None:
    text = "# HELP x y\n# TYPE x gauge\nx 1\n"
    with MetricsServer(lambda: text) as server:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            assert response.read() == text.encode()


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
        failed.value.close()
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
        failed.value.close()


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


# ---------------------------------------------------------------- worker processes


def _start_worker(db: payq.Database, log_path: Path) -> subprocess.Popen:
    """A ``payq worker --metrics-port 0`` on queue ``m``, its log in ``log_path``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, "worker",
               "--app", "workerapp.metrics_app", "--queues", "m", "--concurrency", "2", "--poll-ms", "50",
               "--metrics-port", "0"]
    with open(log_path, "w") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def _ready(worker: subprocess.Popen, log_path: Path) -> dict:
    """The worker's ``worker_ready`` line, once it has written it."""
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline and worker.poll() is None:
        for line in log_path.read_text().splitlines():
            if '"worker_ready"' in line:
                return json.loads(line)
        time.sleep(POLL_S)
    raise AssertionError(f"the worker never said it was ready:\n{log_path.read_text()}")


def _stop_workers(workers: List[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        assert worker.wait(timeout=30) == 0


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.fixture
def worker_processes(payq_db: payq.Database, tmp_path: Path) -> Iterator[StartWorker]:
    """Starts workers on the test's schema; stops them (status 0) at the end."""
    started: List[subprocess.Popen] = []

    def start() -> Tuple[subprocess.Popen, dict]:
        log_path = tmp_path / f"worker{len(started) + 1}.stderr"
        started.append(_start_worker(payq_db, log_path))
        return started[-1], _ready(started[-1], log_path)

    yield start
    _stop_workers(started)


def test_worker_process_serves_its_counters(payq_db: payq.Database, worker_processes: "StartWorker") -> None:
    db = payq_db
    db.queues.configure("m", rate=(1000, timedelta(minutes=1)))  # so claims are recorded
    _, ready = worker_processes()
    url = ready["metrics"]
    for n in range(5):
        db.enqueue("metrics.ok", {"n": n}, queue="m")
    db.enqueue("metrics.flaky", {}, queue="m")

    # The worker counts an outcome just after its completion commits, and
    # the database-wide series are read again at most every few seconds,
    # so the scrape is repeated until the counters have caught up with the
    # database (or the deadline passes and the asserts below say what is off).
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        text = _scrape(url)
        samples = _samples(text)
        counted = sum(value for (name, _), value in samples.items() if name == "payq_worker_tasks_total")
        stats = db.tasks.stats()
        done = stats.get("m", {})
        # The worker also serves payq.alerts: the alert raised when the
        # flaky task died is claimed too, and the default handler succeeds.
        settled = (done.get("succeeded") == 5 and done.get("dead") == 1
                   and stats.get("payq.alerts", {}).get("succeeded") == 1)
        caught_up = samples.get(("payq_queue_tasks", (("queue", "m"), ("state", "dead")))) == 1 \
            and samples.get(("payq_queue_started_total", (("queue", "m"),))) == 6
        if (settled and counted >= 7 and caught_up) or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    families = _families(text)
    # No series names the worker: `instance` does, so a restart keeps them.
    for name, labels in samples:
        assert "worker" not in dict(labels), f"{name} has a worker label"
    assert _get(samples, "payq_worker_claimed_total") == 6 + 1  # the tasks of m and the alert
    assert _get(samples, "payq_worker_tasks_total", outcome="success") == 5 + 1
    assert _get(samples, "payq_worker_tasks_total", outcome="fail") == 1
    assert _get(samples, "payq_queue_tasks", queue="m", state="dead") == 1
    assert _get(samples, "payq_queue_tasks", queue="m", state="pending") == 0
    assert _get(samples, "payq_tasks_enqueued_total", queue="m", kind="metrics.ok") == 5
    assert _get(samples, "payq_tasks_enqueued_total", queue="m", kind="metrics.flaky") == 1
    # Claims are a counter now, not a count over the last minute.
    assert _get(samples, "payq_queue_started_total", queue="m") == 6
    assert "payq_queue_started_last_minute" not in families
    for family in families.values():
        if family.type == "counter":  # type: ignore[attr-defined]
            for sample in family.samples:  # type: ignore[attr-defined]
                assert sample.name in (family.name + "_total", family.name + "_created"), sample.name  # type: ignore[attr-defined]
        else:
            assert not family.name.endswith("_total"), family.name  # type: ignore[attr-defined]
    # The handlers return at once: their time is well under a millisecond,
    # and the sum still grows (seconds, as a float).
    histogram = "payq_worker_attempt_duration_seconds"
    assert families[histogram].type == "histogram"  # type: ignore[attr-defined]
    assert _get(samples, histogram + "_count") == 6 + 1  # with the alert's attempt
    assert _get(samples, histogram + "_bucket", le="+Inf") == 6 + 1
    assert _get(samples, histogram + "_sum") > 0
    buckets = [value for (name, _), value in samples.items() if name == histogram + "_bucket"]
    assert buckets == sorted(buckets), "buckets are cumulative"
    assert _get(samples, "payq_worker_leases_rescued_total") == 0
    assert _get(samples, "payq_build_info", version=payq.__version__, core=core.library_versions()["payq"]) == 1
    # The process: CPU, memory, descriptors, start time.
    assert _get(samples, "process_cpu_seconds_total") > 0
    assert _get(samples, "process_resident_memory_bytes") > 0
    assert _get(samples, "process_open_fds") > 0
    assert _get(samples, "process_start_time_seconds") > 0


def test_of_two_workers_only_the_maintenance_leader_exports_database_series(
        payq_db: payq.Database, worker_processes: "StartWorker") -> None:
    db = payq_db
    db.enqueue("metrics.ok", {}, queue="other", delay=timedelta(hours=1))
    workers = {ready["worker"]: ready["metrics"] for _, ready in (worker_processes(), worker_processes())}
    deadline = time.monotonic() + WAIT_S_MAX
    holder = None
    while holder not in workers and time.monotonic() < deadline:
        with db.transaction() as t:
            rows = t.execute("SELECT holder FROM @schema@.maintenance_lease WHERE expires_at > now()")
        holder = rows[0][0] if rows else None
        time.sleep(POLL_S)
    assert holder in workers, "neither worker took the maintenance lease"
    database_series = ("payq_queue_", "payq_ledger_", "payq_tasks_enqueued")
    for worker_id, url in workers.items():
        samples = _samples(_scrape(url))
        exported = {name for name in _names(samples) if name.startswith(database_series)}
        if worker_id == holder:
            assert _get(samples, "payq_queue_tasks", queue="other", state="pending") == 1
            assert "payq_ledger_transactions_total" in exported
        else:
            assert not exported, f"a worker that does not lead exports {sorted(exported)}"
