"""Workers on many hosts: ``payq worker`` processes in two Linux network
namespaces (stand-in hosts made by the test, :mod:`payq.testing.netns`),
each with its own hostname, reaching a PostgreSQL server in the root
namespace over TCP on the host's own veth link.

Tested: a queue's concurrency and rate limits hold across the hosts
(measured against the limit), killing every process of one host has its
in-flight tasks rescued and run by the other within the task's lease, the
maintenance interval and the maintenance lease takeover, the CLI and the
dashboard name the host that ran each attempt, and a host cut off from the
network loses its task to the other host, says so once, and comes back.

The handlers are tests_py/workerapp/handlers.py (see
test_worker_processes.py); each call is recorded with its pid and the
server's clock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple
from wsgiref.util import setup_testing_defaults

import pytest

import payq
from payq.dashboard import make_app
from payq.embedded import EmbeddedServer
from payq.testing import fresh_schema, netns
from test_worker_processes import (STOP_WAIT_S_MAX, WORKER_GRACE_S, WORKER_POLL_MS, WorkerProcess, overlap_max,
                                   query, runs, wait_until)
from workerapp import tables_create

TESTS_DIR = Path(__file__).resolve().parent
HOSTNAMES = ("payq-host-a", "payq-host-b")
# payq worker's maintenance interval (the CLI keeps the default), and the
# lease of the maintenance leader: a leader that dies is replaced once its
# lease has run out (cpp/src/worker_maintenance.cpp).
MAINTENANCE_INTERVAL = timedelta(seconds=1)
MAINTENANCE_TAKEOVER = 3 * MAINTENANCE_INTERVAL + timedelta(seconds=2)
CLI_TIMEOUT_S = 30.0
# How long a statement sent into a partition may wait for the server's
# acknowledgement before libpq gives the connection up (a DSN parameter).
PARTITION_TCP_USER_TIMEOUT_MS = 3000


def _seconds(delta: timedelta) -> float:
    return delta / timedelta(seconds=1)


# ---------------------------------------------------------------- hosts and the server


@pytest.fixture(scope="module")
def hosts() -> Iterator[List[netns.Host]]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(f"stand-in worker hosts need network namespaces: {reason}")
    with netns.network_hosts(HOSTNAMES) as made:
        yield made


@dataclass(frozen=True)
class TcpServer:
    """A PostgreSQL server listening on the root namespace's end of each
    host's link, open to those hosts' networks only."""

    local_dsn: str   # the unix socket, for the test itself
    port: int

    def dsn_from(self, host: netns.Host, *extra: str) -> str:
        """The DSN a process on ``host`` uses: TCP to its link's gateway."""
        words = [w for w in self.local_dsn.split() if not w.startswith("host=")]
        return " ".join([f"host={host.gateway}", *words, "connect_timeout=5", *extra])


def _free_port(addresses: Sequence[str]) -> int:
    """A port free on every address (another server may listen on all)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {addresses}")


@pytest.fixture(scope="module")
def server(hosts: List[netns.Host]) -> Iterator[TcpServer]:
    home = tempfile.mkdtemp(prefix="payq-hosts-", dir="/tmp")
    os.chmod(home, 0o755)  # as root the server runs as another user, who must reach it
    port = _free_port([h.gateway for h in hosts])
    embedded = EmbeddedServer(home, durable=False, port=port)
    embedded.remove_when_process_exits()
    try:
        # The embedded server listens on its unix socket only: create it,
        # then open TCP on the hosts' links and restart.
        local_dsn = embedded.up()
        embedded.down()
        data = Path(home) / "data"
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# test_worker_hosts.py\nlisten_addresses = '{','.join(h.gateway for h in hosts)}'\n")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {h.network} trust\n" for h in hosts)
        embedded.up()
        yield TcpServer(local_dsn, port)
    finally:
        try:
            embedded.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db(server: TcpServer) -> Iterator[payq.Database]:
    with fresh_schema(server.local_dsn) as database:
        tables_create(database)
        yield database


# ---------------------------------------------------------------- workers on hosts


class HostWorkers:
    """Starts ``payq worker`` processes on stand-in hosts; at the end of
    the test stops every one still running."""

    def __init__(self, db: payq.Database, server: TcpServer, log_dir: Path) -> None:
        self.db = db
        self.server = server
        self.log_dir = log_dir
        self.started: List[Tuple[netns.Host, WorkerProcess]] = []

    def start(self, host: netns.Host, *args: str, queues: str = "default", concurrency: int = 2,
              dsn_extra: Sequence[str] = ()) -> WorkerProcess:
        name = f"{host.hostname}-worker{len(self.on(host)) + 1}"
        dsn = self.server.dsn_from(host, *dsn_extra)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
        env["WORKERAPP_DSN"] = dsn  # the handlers' own connection goes over the host's link too
        env["WORKERAPP_SCHEMA"] = self.db.schema
        command = host.command([
            sys.executable, "-m", "payq", "--dsn", dsn, "--schema", self.db.schema, "worker",
            "--app", "workerapp.handlers", "--queues", queues, "--concurrency", str(concurrency),
            "--poll-ms", str(WORKER_POLL_MS), "--grace-s", str(WORKER_GRACE_S), *args])
        stdout_path = self.log_dir / f"{name}.stdout"
        stderr_path = self.log_dir / f"{name}.stderr"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            popen = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, start_new_session=True)
        process = WorkerProcess(name, popen, stdout_path, stderr_path)
        self.started.append((host, process))
        return process

    def start_and_wait(self, host: netns.Host, count: int, *args: str, **options) -> List[WorkerProcess]:
        """Start ``count`` workers on ``host``; wait until each one's threads run."""
        started = [self.start(host, *args, **options) for _ in range(count)]
        wait_until(lambda: all(w.events("worker_started") for w in started), f"the workers on {host.hostname} "
                   "to start", self, started)
        return started

    def on(self, host: netns.Host) -> List[WorkerProcess]:
        return [p for h, p in self.started if h is host]

    def host_of_pid(self) -> Dict[int, str]:
        return {p.pid: h.hostname for h, p in self.started}

    def logs(self) -> str:
        return "\n".join(p.log_tail() for _, p in self.started)

    def close(self) -> None:
        for _, process in self.started:
            if process.alive():
                process.popen.terminate()
        for _, process in self.started:
            try:
                process.popen.wait(timeout=STOP_WAIT_S_MAX)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=STOP_WAIT_S_MAX)


@pytest.fixture
def workers(db: payq.Database, server: TcpServer, tmp_path: Path) -> Iterator[HostWorkers]:
    pool = HostWorkers(db, server, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def _succeeded(db: payq.Database, queue: str, count: int) -> bool:
    by_state = db.tasks.stats().get(queue, {})
    stuck = {s: n for s, n in by_state.items() if s in ("dead", "needs_review", "cancelled")}
    if stuck:
        pytest.fail(f"tasks of queue {queue!r} ended badly: {by_state}")
    return by_state.get("succeeded", 0) == count


def _starts_per_window_max(starts_us: Sequence[int], window_us: int) -> int:
    """The most starts within any window [t, t + window)."""
    ordered = sorted(starts_us)
    most = first = 0
    for last, start in enumerate(ordered):
        while ordered[first] <= start - window_us:
            first += 1
        most = max(most, last - first + 1)
    return most


def _worker_host(worker_id: str) -> Tuple[str, int]:
    """(hostname, pid) of a default worker id, ``<hostname>:<pid>:<random>``."""
    hostname, pid, _ = worker_id.rsplit(":", 2)
    return hostname, int(pid)


def _report(figures: Dict[str, object]) -> None:
    print("\nworker hosts: " + json.dumps(figures, sort_keys=True))


# ---------------------------------------------------------------- tests


def test_queue_limits_hold_across_hosts(db, hosts, workers):
    concurrency_max, rate_count_max, rate_window = 3, 5, timedelta(seconds=2)
    db.queues.configure("limited", concurrency=concurrency_max)
    db.queues.configure("rated", rate=(rate_count_max, rate_window))
    # Each host alone could run 4 at once (two processes of two threads,
    # one task per claim): only the global limit stops it.
    for host in hosts:
        workers.start_and_wait(host, 2, "--batch", "1", queues="limited,rated", concurrency=2)
    limited_count, rated_count = 24, 15
    db.enqueue_many([payq.TaskRequest("wp.record", {"sleep_ms": 150}, queue="limited") for _ in range(limited_count)]
                    + [payq.TaskRequest("wp.record", {}, queue="rated") for _ in range(rated_count)])
    wait_until(lambda: _succeeded(db, "limited", limited_count) and _succeeded(db, "rated", rated_count),
               "every task to succeed", workers, [p for _, p in workers.started])
    host_of = workers.host_of_pid()

    limited = runs(db, "queue = 'limited'")
    assert len(limited) == limited_count and all(r.ended_us is not None for r in limited)
    most = overlap_max([(r.started_us, r.ended_us) for r in limited])
    assert most <= concurrency_max, f"{most} handlers of queue 'limited' ran at once across the hosts"
    assert most == concurrency_max, "the limit was never reached: it was not tested"
    by_host = {name: [r for r in limited if host_of[r.pid] == name] for name in HOSTNAMES}
    assert all(by_host.values()), {name: len(rs) for name, rs in by_host.items()}
    # The hosts ran tasks of the queue at the same time, so the limit was
    # shared between them, not met by one host alone.
    a_runs, b_runs = by_host.values()
    assert any(a.started_us < b.ended_us and b.started_us < a.ended_us for a in a_runs for b in b_runs)

    rated = runs(db, "queue = 'rated'")
    assert len(rated) == rated_count and all(r.claimed_us is not None for r in rated)
    window_us = rate_window // timedelta(microseconds=1)
    starts_max = _starts_per_window_max([r.claimed_us for r in rated], window_us)
    assert starts_max <= rate_count_max, f"{starts_max} claims within {rate_window} across the hosts"
    assert starts_max == rate_count_max, "the rate limit was never reached: it was not tested"
    assert {host_of[r.pid] for r in rated} == set(HOSTNAMES)
    _report({"concurrency_limit": concurrency_max, "concurrent_max": most,
             "limited_runs_per_host": {name: len(rs) for name, rs in by_host.items()},
             "rate_limit": f"{rate_count_max}/{_seconds(rate_window):g}s", "starts_per_window_max": starts_max,
             "rated_runs_per_host": {name: sum(1 for r in rated if host_of[r.pid] == name) for name in HOSTNAMES}})


def _db_now(db: payq.Database) -> datetime:
    [[text]] = query(db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
    return datetime.fromisoformat(text + "+00:00")


def _dashboard_page(db: payq.Database, path: str) -> str:
    with make_app(db, authenticate=lambda environ: "test:ops") as app:
        environ: Dict[str, object] = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
        setup_testing_defaults(environ)
        status: List[str] = []
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status and status[0].startswith("200"), (status, body[:500])
    return body.decode()


def test_a_killed_host_has_its_tasks_rescued_by_the_other_host(db, hosts, server, workers):
    host_a, host_b = hosts
    # The lease of one attempt. Host B starts while host A's handlers hold
    # their tasks, and host A must be killed before these leases run out.
    task_timeout = timedelta(seconds=6)
    lock_key = zlib.crc32(db.schema.encode())
    # The test holds the lock every first attempt waits for: host A's
    # handlers are stuck mid-call when the host dies.
    blocker = db.transaction()
    try:
        blocker.execute("SELECT pg_advisory_xact_lock($1::bigint)", [lock_key])
        on_a = workers.start_and_wait(host_a, 2, "--batch", "1", concurrency=2)
        wait_until(lambda: any(w.events("maintenance_leader_acquired") for w in on_a),
                   "host A to lead maintenance", workers, on_a)
        task_ids = [r.task_id for r in db.enqueue_many(
            [payq.TaskRequest("wp.block", {"block_attempt": 1, "lock_key": lock_key}, timeout=task_timeout,
                              max_attempts=3) for _ in range(4)])]
        wait_until(lambda: len(runs(db)) == len(task_ids), "host A to run every task", workers, on_a)
        on_b = workers.start_and_wait(host_b, 2, "--batch", "1", concurrency=2)

        a_pids = {w.pid for w in on_a}
        killed = host_a.kill_all(signal.SIGKILL)
        killed_at = _db_now(db)
        assert set(killed) == a_pids, (killed, a_pids)
        for process in on_a:
            assert process.popen.wait(timeout=STOP_WAIT_S_MAX) == -signal.SIGKILL
        running = [db.tasks.get(i) for i in task_ids]
        assert all(t.state == "running" and t.attempt == 1 for t in running), (
            f"the tasks' leases ran out before host A was killed (host B was slow to start?): {running}")
        assert not any(w.events("maintenance_leader_acquired") for w in on_b), workers.logs()

        wait_until(lambda: _succeeded(db, "default", len(task_ids)), "host B to rescue and run every task",
                   workers, on_b)
    finally:
        blocker.rollback()

    b_pids = {w.pid for w in on_b}
    assert any(w.events("maintenance_leader_acquired") for w in on_b), workers.logs()
    rescue_s, rerun_s = [], []
    for task_id in task_ids:
        attempts = db.tasks.attempts(task_id)
        assert [(a.attempt, a.outcome) for a in attempts] == [(1, "unknown"), (2, "success")], attempts
        first, second = attempts
        assert "lease expired" in (first.error or "")
        assert _worker_host(first.worker_id)[0] == host_a.hostname and _worker_host(first.worker_id)[1] in a_pids
        assert _worker_host(second.worker_id)[0] == host_b.hostname and _worker_host(second.worker_id)[1] in b_pids
        rescue_s.append(_seconds(first.finished_at - killed_at))
        rerun_s.append(_seconds(second.started_at - killed_at))
    bound_s = _seconds(task_timeout + MAINTENANCE_INTERVAL + MAINTENANCE_TAKEOVER)
    assert max(rescue_s) <= bound_s, (rescue_s, bound_s)
    calls = runs(db)
    assert {workers.host_of_pid()[c.pid] for c in calls if c.attempt == 1} == {host_a.hostname}
    assert {workers.host_of_pid()[c.pid] for c in calls if c.attempt == 2} == {host_b.hostname}

    # An operator on host B asks the CLI (over the host's link) who ran the task.
    task_id = task_ids[0]
    shown = subprocess.run(host_b.command([sys.executable, "-m", "payq", "--dsn", server.dsn_from(host_b),
                                           "--schema", db.schema, "tasks", "show", str(task_id), "--json"]),
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert shown.returncode == 0, shown.stderr
    cli_hosts = [(a["attempt"], _worker_host(a["worker_id"])[0]) for a in json.loads(shown.stdout)["attempts"]]
    assert cli_hosts == [(1, host_a.hostname), (2, host_b.hostname)]
    # The dashboard's attempt timeline names the same hosts.
    for task_id in task_ids:
        page = _dashboard_page(db, f"/tasks/{task_id}")
        for attempt in db.tasks.attempts(task_id):
            assert f"attempt #{attempt.attempt} by <code>{attempt.worker_id}</code>" in page, page
        assert f"by <code>{host_a.hostname}:" in page and f"by <code>{host_b.hostname}:" in page
    _report({"task_timeout_s": _seconds(task_timeout), "maintenance_interval_s": _seconds(MAINTENANCE_INTERVAL),
             "maintenance_takeover_s": _seconds(MAINTENANCE_TAKEOVER), "rescue_bound_s": bound_s,
             "rescue_s_max": round(max(rescue_s), 3), "rescue_s_min": round(min(rescue_s), 3),
             "rerun_on_host_b_s_max": round(max(rerun_s), 3)})


def test_a_partitioned_host_loses_its_task_to_the_other_and_comes_back(db, hosts, workers):
    host_a, host_b = hosts
    # The handler outlives the partition's start; its lease runs out during it.
    task_timeout, handler_ms = timedelta(seconds=5), 4000
    # Without a TCP user timeout a statement sent into the partition waits
    # for the kernel's retransmissions (about 15 minutes on Linux), silently.
    dsn_extra = [f"tcp_user_timeout={PARTITION_TCP_USER_TIMEOUT_MS}"]
    # Host A runs the task alone and takes no part in maintenance; host B,
    # started after the claim, leads maintenance.
    [on_a] = workers.start_and_wait(host_a, 1, "--no-maintenance", "--batch", "1", concurrency=1,
                                    dsn_extra=dsn_extra)
    task_id = db.enqueue("wp.record", {"sleep_ms": handler_ms}, timeout=task_timeout, max_attempts=3).task_id
    wait_until(lambda: runs(db), "host A to start the task", workers, [on_a])
    [on_b] = workers.start_and_wait(host_b, 1, "--batch", "1", concurrency=1, dsn_extra=dsn_extra)
    started = time.monotonic()
    host_a.link_set(False)
    try:
        [first_run] = runs(db)
        assert first_run.ended_us is None, "host A finished before the partition (host B was slow to start?)"
        wait_until(lambda: _succeeded(db, "default", 1), "host B to rescue and run the task", workers, [on_b])
        rescued_s = time.monotonic() - started
        wait_until(lambda: on_a.events("database_unavailable"), "host A to notice the partition", workers, [on_a])
        noticed_s = time.monotonic() - started
    finally:
        host_a.link_set(True)
    healed = time.monotonic()
    wait_until(lambda: on_a.events("database_available"), "host A to reach the database again", workers, [on_a])
    back_s = time.monotonic() - healed

    attempts = db.tasks.attempts(task_id)
    assert [(a.attempt, a.outcome, _worker_host(a.worker_id)[0]) for a in attempts] == [
        (1, "unknown", host_a.hostname), (2, "success", host_b.hostname)], attempts
    # Host A's handler finished into the partition: its end (written with
    # the completion) never committed, and the task succeeded once.
    assert [(r.attempt, r.pid, r.ended_us is not None) for r in runs(db)] == [(1, on_a.pid, False),
                                                                              (2, on_b.pid, True)]
    # One line when the outage began, one when it ended; the worker never exited.
    assert len(on_a.events("database_unavailable")) == 1 and len(on_a.events("database_available")) == 1
    assert on_a.alive(), workers.logs()

    # Host A works again.
    more_count = 6
    db.enqueue_many([payq.TaskRequest("wp.record", {"sleep_ms": 300}) for _ in range(more_count)])
    wait_until(lambda: _succeeded(db, "default", 1 + more_count), "the tasks after the partition", workers,
               [on_a, on_b])
    assert on_a.pid in {r.pid for r in runs(db, "task_id <> $1::bigint", [task_id])}
    _report({"partition_task_timeout_s": _seconds(task_timeout),
             "tcp_user_timeout_ms": PARTITION_TCP_USER_TIMEOUT_MS,
             "partition_to_success_on_host_b_s": round(rescued_s, 3),
             "partition_to_database_unavailable_s": round(noticed_s, 3),
             "heal_to_database_available_s": round(back_s, 3)})
