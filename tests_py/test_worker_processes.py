"""The worker as operators run it: real ``payq worker`` processes, killed,
stopped and run side by side, checked from outside through the database.

The handlers live in tests_py/workerapp/handlers.py; each call is recorded
in ``workerapp.RUN_TABLE`` with the attempt, lease token, idempotency key,
worker pid, claim time and start and end times (the end is written in the
transaction that completes the task, so a run with an end is a run whose
success was recorded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TypeVar

import pytest

import payq
from payq.cli import EXIT_WORKER_FAILED
from payq.testing import wait_until as payq_wait_until
from workerapp import RUN_TABLE, claim_breaker_install, tables_create

TESTS_DIR = Path(__file__).resolve().parent
WAIT_S_MAX = 60.0
POLL_S = 0.05
# Workers poll at this interval when no NOTIFY arrives; short, so rescued
# and retried tasks are picked up quickly, but not so short that idle
# threads load the shared CPUs.
WORKER_POLL_MS = 100
WORKER_GRACE_S = 10
STOP_WAIT_S_MAX = 15.0

T = TypeVar("T")


# ---------------------------------------------------------------- processes


@dataclass
class WorkerProcess:
    name: str
    popen: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def events(self, name: Optional[str] = None) -> List[dict]:
        """The worker's JSON log lines (stderr), optionally of one event."""
        out = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                out.append(record)
        return out

    def log_tail(self, line_count: int = 25) -> str:
        lines = self.stderr_path.read_text(errors="replace").splitlines()[-line_count:]
        return f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}) stderr tail:\n" + "\n".join(lines)

    def stop(self, signum: int, timeout_s: float = STOP_WAIT_S_MAX) -> int:
        """Send ``signum`` and wait for the exit; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signum)
        return self.popen.wait(timeout=timeout_s)


class Workers:
    """Starts ``payq worker`` processes on the test's schema and, at the
    end of the test, stops every one still running."""

    def __init__(self, db: payq.Database, log_dir: Path) -> None:
        self.db = db
        self.log_dir = log_dir
        self.started: List[WorkerProcess] = []

    def start(self, *args: str, queues: str = "default", concurrency: int = 2) -> WorkerProcess:
        name = f"worker{len(self.started) + 1}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
        env["WORKERAPP_DSN"] = self.db.dsn
        env["WORKERAPP_SCHEMA"] = self.db.schema
        command = [sys.executable, "-m", "payq", "--dsn", self.db.dsn, "--schema", self.db.schema, "worker",
                   "--app", "workerapp.handlers", "--queues", queues, "--concurrency", str(concurrency),
                   "--poll-ms", str(WORKER_POLL_MS), "--grace-s", str(WORKER_GRACE_S), *args]
        stdout_path = self.log_dir / f"{name}.stdout"
        stderr_path = self.log_dir / f"{name}.stderr"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            popen = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, start_new_session=True)
        process = WorkerProcess(name, popen, stdout_path, stderr_path)
        self.started.append(process)
        return process

    def start_and_wait(self, count: int, *args: str, **options) -> List[WorkerProcess]:
        """Start ``count`` workers and wait until each one's threads run."""
        started = [self.start(*args, **options) for _ in range(count)]
        wait_until(lambda: all(w.events("worker_started") for w in started), "the workers to start", self,
                   started)
        return started

    def logs(self) -> str:
        return "\n".join(w.log_tail() for w in self.started)

    def close(self) -> None:
        for process in self.started:
            if process.alive():
                process.popen.terminate()
        for process in self.started:
            try:
                process.popen.wait(timeout=STOP_WAIT_S_MAX)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=STOP_WAIT_S_MAX)


@pytest.fixture
def workers(payq_db: payq.Database, tmp_path: Path) -> Iterator[Workers]:
    tables_create(payq_db)
    pool = Workers(payq_db, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def wait_until(condition: Callable[[], T], what: str, workers: Workers,
               expected_alive: Sequence[WorkerProcess] = (), timeout_s: float = WAIT_S_MAX) -> T:
    """Poll ``condition`` until it returns something true; fail with the
    workers' logs on timeout or when a worker that should run has exited."""
    def checked() -> T:
        value = condition()
        if not value:
            for process in expected_alive:
                if not process.alive():
                    pytest.fail(f"{process.name} exited while waiting for {what}\n{workers.logs()}")
        return value

    return payq_wait_until(checked, timeout_s, interval_s=POLL_S, what=what, diagnostics=workers.logs)


# ---------------------------------------------------------------- reading


def query(db: payq.Database, sql: str, params: Sequence = ()) -> list:
    with db.transaction() as t:
        return t.execute(sql, params)


@dataclass(frozen=True)
class Run:
    """One handler call, as the handler recorded it. Times are
    microseconds since the epoch, all from the database server's clock."""

    run_id: int
    task_id: int
    kind: str
    queue: str
    attempt: int
    lease_token: int
    idempotency_key: str
    unique_key: Optional[str]
    pid: int
    claimed_us: Optional[int]
    started_us: int
    ended_us: Optional[int]


def _int_or_none(text: Optional[str]) -> Optional[int]:
    return None if text is None else int(text)


def runs(db: payq.Database, where: str = "true", params: Sequence = ()) -> List[Run]:
    rows = query(db, f"""
        SELECT run_id, task_id, kind, queue, attempt, lease_token, idempotency_key, unique_key, pid,
               (extract(epoch FROM claimed_at) * 1000000)::bigint,
               (extract(epoch FROM started_at) * 1000000)::bigint,
               (extract(epoch FROM ended_at) * 1000000)::bigint
        FROM {RUN_TABLE} WHERE {where} ORDER BY run_id""", params)
    return [Run(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5]), r[6], r[7], int(r[8]),
                _int_or_none(r[9]), int(r[10]), _int_or_none(r[11])) for r in rows]


def runs_by_task(all_runs: Sequence[Run]) -> Dict[int, List[Run]]:
    out: Dict[int, List[Run]] = defaultdict(list)
    for run in all_runs:
        out[run.task_id].append(run)
    return out


def states(db: payq.Database, queue: str = "default") -> Dict[str, int]:
    return db.tasks.stats().get(queue, {})


def all_succeeded(db: payq.Database, queue: str, count: int) -> bool:
    by_state = states(db, queue)
    stuck = {s: n for s, n in by_state.items() if s in ("dead", "needs_review", "cancelled")}
    if stuck:
        pytest.fail(f"tasks of queue {queue!r} ended badly: {by_state}")
    return by_state.get("succeeded", 0) == count


def overlap_max(intervals: Sequence[tuple]) -> int:
    """The most intervals [start, end) open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    # At equal times the end (-1) sorts before the start (+1): touching is not overlapping.
    open_count = highest = 0
    for _, step in events:
        open_count += step
        highest = max(highest, open_count)
    return highest


def db_minute(db: payq.Database) -> str:
    """The database's current minute in the format of cron slots' unique keys."""
    return query(db, """SELECT to_char(date_trunc('minute', now()) AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI"Z"')""")[0][0]


# ---------------------------------------------------------------- tests


def test_killed_worker_task_is_rescued_and_retried_with_the_same_key(payq_db, workers):
    lock_key = zlib.crc32(payq_db.schema.encode())
    # The test holds the lock the first attempt's handler waits for: that
    # handler is stuck mid-call until the test lets go.
    blocker = payq_db.transaction()
    try:
        blocker.execute("SELECT pg_advisory_xact_lock($1::bigint)", [lock_key])
        task_id = payq_db.enqueue("wp.block", {"block_attempt": 1, "lock_key": lock_key},
                                  timeout=timedelta(seconds=2), max_attempts=5).task_id
        # Without maintenance and with one thread, the first worker can
        # neither rescue the task nor run it again itself.
        first = workers.start("--no-maintenance", concurrency=1)
        wait_until(lambda: runs(payq_db, "task_id = $1::bigint", [task_id]), "the first call", workers, [first])
        assert payq_db.tasks.get(task_id).state == "running"

        first.popen.send_signal(signal.SIGKILL)
        assert first.popen.wait(timeout=STOP_WAIT_S_MAX) == -signal.SIGKILL
        assert payq_db.tasks.get(task_id).state == "running"  # nobody else has noticed yet

        second = workers.start(concurrency=2)
        wait_until(lambda: payq_db.tasks.get(task_id).state in ("succeeded", "dead", "needs_review"),
                   "the task to be rescued and retried", workers, [second])
    finally:
        blocker.rollback()

    task = payq_db.tasks.get(task_id)
    assert task.state == "succeeded", workers.logs()
    assert task.attempt == 2
    calls = runs(payq_db, "task_id = $1::bigint", [task_id])
    assert [(c.attempt, c.pid) for c in calls] == [(1, first.pid), (2, second.pid)]
    assert {c.idempotency_key for c in calls} == {task.idempotency_key}
    assert calls[0].lease_token != calls[1].lease_token
    assert calls[0].ended_us is None and calls[1].ended_us is not None  # one success recorded, the second
    assert task.result == {"run_id": calls[1].run_id, "pid": second.pid}
    attempts = payq_db.tasks.attempts(task_id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "unknown"), (2, "success")]
    assert "lease expired" in (attempts[0].error or "")
    # The rescue waited for the lease to run out.
    [[waited]] = query(payq_db, f"""
        SELECT a.finished_at >= r.claimed_at + interval '2 seconds'
        FROM @schema@.task_attempt a JOIN {RUN_TABLE} r ON r.task_id = a.task_id AND r.attempt = a.attempt
        WHERE a.task_id = $1::bigint AND a.attempt = 1""", [task_id])
    assert waited == "t"


def test_no_task_runs_in_two_workers_at_once(payq_db, workers):
    task_count, batch_count = 200, 4
    workers.start_and_wait(3, concurrency=2)
    task_ids = []
    for _ in range(batch_count):
        results = payq_db.enqueue_many(
            [payq.TaskRequest("wp.record", {"sleep_ms": 10}) for _ in range(task_count // batch_count)])
        task_ids += [r.task_id for r in results]
    wait_until(lambda: all_succeeded(payq_db, "default", task_count), "every task to succeed", workers,
               workers.started)

    by_task = runs_by_task(runs(payq_db))
    assert sorted(by_task) == sorted(task_ids)
    for task_id, calls in by_task.items():
        attempts = payq_db.tasks.attempts(task_id)
        assert [a.outcome for a in attempts].count("success") == 1, (task_id, attempts)
        assert len([c for c in calls if c.ended_us is not None]) == 1, (task_id, calls)
        assert len({c.attempt for c in calls}) == len(calls), (task_id, calls)
        assert len({c.lease_token for c in calls}) == len(calls), (task_id, calls)
        ordered = sorted(calls, key=lambda c: c.started_us)
        for earlier, later in zip(ordered, ordered[1:]):
            # A run without an end never finished: it overlaps everything after it.
            assert earlier.ended_us is not None and earlier.ended_us <= later.started_us, (task_id, calls)
    pids = {c.pid for calls in by_task.values() for c in calls}
    assert len(pids) >= 2, f"only {pids} ran tasks: the test did not exercise several processes"


def test_queue_limits_hold_across_worker_processes(payq_db, workers):
    concurrency_max, rate_count_max, rate_window = 2, 5, timedelta(seconds=2)
    payq_db.queues.configure("limited", concurrency=concurrency_max)
    payq_db.queues.configure("rated", rate=(rate_count_max, rate_window))
    # Three processes of one thread each, one task per claim: reaching the
    # limit of 2 proves two processes ran at once, and the third competes.
    workers.start_and_wait(3, "--batch", "1", queues="limited,rated", concurrency=1)
    limited_count, rated_count = 16, 12
    payq_db.enqueue_many([payq.TaskRequest("wp.record", {"sleep_ms": 100}, queue="limited")
                          for _ in range(limited_count)]
                         + [payq.TaskRequest("wp.record", {}, queue="rated") for _ in range(rated_count)])
    wait_until(lambda: all_succeeded(payq_db, "limited", limited_count)
               and all_succeeded(payq_db, "rated", rated_count), "every task to succeed", workers, workers.started)

    limited = runs(payq_db, "queue = 'limited'")
    assert len(limited) == limited_count and all(r.ended_us is not None for r in limited)
    most = overlap_max([(r.started_us, r.ended_us) for r in limited])
    assert most <= concurrency_max, f"{most} handlers of queue 'limited' ran at once"
    # The limit was reached (by two single-thread processes at once), so the
    # bound above was tested across processes, not idle.
    assert most == concurrency_max
    assert len({r.pid for r in limited}) >= 2

    rated = runs(payq_db, "queue = 'rated'")
    assert len(rated) == rated_count and all(r.claimed_us is not None for r in rated)
    claims = sorted(r.claimed_us for r in rated)
    window_us = rate_window // timedelta(microseconds=1)
    # Any rate_count_max + 1 consecutive claims span at least the window.
    crowded = [(claims[i], claims[i + rate_count_max]) for i in range(len(claims) - rate_count_max)
               if claims[i + rate_count_max] - claims[i] < window_us]
    assert not crowded, f"more than {rate_count_max} claims within {rate_window}: {crowded}"


def _hold_expired_by_maintenance(db: payq.Database, account: payq.Account, key: str,
                                 workers: Workers, alive: Sequence[WorkerProcess]) -> None:
    """Wait for one maintenance tick that began after this call: the leader
    expires a hold that is due at once."""
    hold = db.ledger.hold(account, "1.00", key=key, expires_in=timedelta(milliseconds=1))
    wait_until(lambda: db.ledger.get_hold(hold.id).status == "expired", f"maintenance to expire hold {key}",
               workers, alive)


def test_cron_fires_each_slot_once_with_three_workers(payq_db, workers):
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    first_minute = db_minute(payq_db)
    payq_db.queues.cron("tick", "* * * * *", "tick")
    # Created long ago, so the current minute is due at once. Missed slots
    # are not replayed: only the latest may fire.
    with payq_db.transaction() as t:
        t.execute("UPDATE @schema@.cron_entry SET created_at = now() - interval '10 minutes' WHERE name = 'tick'")
    trio = [workers.start(concurrency=1) for _ in range(3)]

    def first_tick_ran() -> Optional[Run]:
        done = runs(payq_db, "kind = 'tick' AND ended_at IS NOT NULL")
        return done[0] if done else None

    first_tick = wait_until(first_tick_ran, "the first tick to run", workers, trio)
    leaders = [w for w in trio if w.events("maintenance_leader_acquired")]
    assert len(leaders) == 1, f"{len(leaders)} maintenance leaders at once\n{workers.logs()}"

    # The leader dies; another takes over and runs whole maintenance ticks
    # (cron included) after that. The slot must not fire again.
    [leader] = leaders
    leader.popen.send_signal(signal.SIGKILL)
    assert leader.popen.wait(timeout=STOP_WAIT_S_MAX) == -signal.SIGKILL
    survivors = [w for w in trio if w is not leader]
    wait_until(lambda: any(w.events("maintenance_leader_acquired") for w in survivors), "a new maintenance leader",
               workers, survivors)
    # Tick N expires the first hold; its cron step has run once tick N+1
    # expires the second.
    _hold_expired_by_maintenance(payq_db, alice, "tick-a", workers, survivors)
    _hold_expired_by_maintenance(payq_db, alice, "tick-b", workers, survivors)
    last_minute = db_minute(payq_db)

    ticks = query(payq_db, "SELECT id, unique_key FROM @schema@.task WHERE kind = 'tick' ORDER BY id")
    slots = [key for _, key in ticks]
    assert slots.count(first_tick.unique_key) == 1
    assert len(set(slots)) == len(slots), slots
    for slot in slots:
        assert slot.startswith("cron:tick:"), slot
        assert f"cron:tick:{first_minute}" <= slot <= f"cron:tick:{last_minute}", (slot, first_minute, last_minute)
    tick_runs = runs_by_task(runs(payq_db, "kind = 'tick'"))
    assert len(tick_runs[first_tick.task_id]) == 1, tick_runs[first_tick.task_id]
    # A later slot may have been in flight in the killed leader, but no slot
    # ran twice.
    assert all(len(calls) == 1 for calls in tick_runs.values()), dict(tick_runs)


def test_sigterm_gives_back_unstarted_tasks_and_leaves_nothing_running(payq_db, workers):
    task_count = 30
    task_ids = [r.task_id for r in payq_db.enqueue_many(
        [payq.TaskRequest("wp.record", {"sleep_ms": 200}) for _ in range(task_count)])]
    [worker] = workers.start_and_wait(1, concurrency=2)
    wait_until(lambda: len(runs(payq_db, "ended_at IS NULL")) >= 1 and len(runs(payq_db)) >= 2,
               "tasks to be running", workers, [worker])

    signalled = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    try:
        exit_code = worker.popen.wait(timeout=WORKER_GRACE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within its {WORKER_GRACE_S} s grace\n{workers.logs()}")
    assert exit_code == 0, workers.logs()
    assert time.monotonic() - signalled < WORKER_GRACE_S

    by_state = states(payq_db)
    assert set(by_state) <= {"pending", "succeeded"}, by_state
    assert by_state.get("pending", 0) > 0, "the worker stopped only after running everything"
    calls = runs_by_task(runs(payq_db))
    # Handlers in flight at SIGTERM finished and recorded their success.
    assert all(c.ended_us is not None for cs in calls.values() for c in cs), dict(calls)
    stopped = worker.events("worker_stopped")
    assert stopped and stopped[-1]["given_back"] > 0, workers.logs()
    for task_id in task_ids:
        task = payq_db.tasks.get(task_id)
        attempts = payq_db.tasks.attempts(task_id)
        if task.state == "succeeded":
            assert len(calls[task_id]) == 1 and [a.outcome for a in attempts] == ["success"], (task, attempts)
        else:
            # Given back, or never claimed: no attempt counted, none recorded.
            assert task.attempt == 0 and attempts == [] and task_id not in calls, (task, attempts)

    # The given-back tasks run normally afterwards, as their first attempt.
    workers.start_and_wait(1, concurrency=4)
    wait_until(lambda: all_succeeded(payq_db, "default", task_count), "the rest to succeed", workers,
               workers.started[-1:])
    for task_id in task_ids:
        assert payq_db.tasks.get(task_id).attempt == 1
        assert [a.outcome for a in payq_db.tasks.attempts(task_id)] == ["success"]


def test_worker_thread_failure_exits_non_zero_with_the_error(payq_db, workers):
    claim_breaker_install(payq_db)
    payq_db.enqueue("wp.record", {})
    worker = workers.start(concurrency=1)
    try:
        exit_code = worker.popen.wait(timeout=STOP_WAIT_S_MAX)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running after its thread failed\n{workers.logs()}")
    assert exit_code == EXIT_WORKER_FAILED, workers.logs()
    [failed] = worker.events("worker_failed")
    assert "not running under a lease" in failed["error"], workers.logs()
    assert worker.events("worker_thread_failed"), workers.logs()
    assert "Traceback" not in worker.stderr_path.read_text(), workers.logs()
