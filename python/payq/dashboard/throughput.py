"""Queue depth and finished tasks over time: the overview's chart.

payq keeps no history of queue depth, so the dashboard samples
``db.queues.list()`` into a bounded in-memory ring (one hour at the default
interval). Finished tasks are counted per minute from ``task.finished_at``,
read incrementally: each sample reads only the tasks finished since the
previous one, through the ``task_finished`` index, so a sample costs what
finished in the meantime, never the whole table. The first sample reads
the last hour once (the same index, bounded by the hour).

Samples are taken by a background thread (:meth:`Throughput.start`, used by
``payq dashboard``) or on demand when a page needs them
(:meth:`Throughput.sample_if_due`, enough when the dashboard is mounted in
a web application with several processes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Deque, Dict, List, Optional, Type

import payq

__all__ = ["Throughput", "DepthSample"]

log = logging.getLogger("payq.dashboard")

DEPTH_SAMPLES_MAX = 360
"""Depth samples kept: an hour at the default 10 s interval."""
MINUTES_KEPT = 60
"""Per-minute buckets of finished tasks kept."""
COMMIT_GRACE = timedelta(seconds=5)
"""A completion commits a little after its ``finished_at``; counting stops
this far behind now, so a late commit is counted by the next sample."""

_BOUNDS_SQL = """
SELECT (b.upper)::text, (b.upper - interval '1 hour')::text, (extract(epoch FROM now()) * 1000)::bigint
FROM (SELECT now() - $1::bigint * interval '1 millisecond' AS upper) b"""

# Incremental: (previous upper bound, this upper bound]. The range is read
# through the partial index task_finished (finished_at IS NOT NULL).
_FINISHED_SQL = """
SELECT (extract(epoch FROM date_trunc('minute', finished_at)) * 1000)::bigint AS minute_ms, state, count(*)
FROM @schema@.task
WHERE finished_at > $1::timestamptz AND finished_at <= $2::timestamptz
GROUP BY 1, 2"""


@dataclass(frozen=True)
class DepthSample:
    """Live tasks of every queue at one moment (database clock)."""

    at_ms: int
    pending: int
    runnable: int
    running: int
    held: int
    dead: int
    needs_review: int


class Throughput:
    """A bounded, in-memory history of queue depth and finished tasks."""

    def __init__(self, db: "payq.Database", *, interval: timedelta = timedelta(seconds=10),
                 commit_grace: timedelta = COMMIT_GRACE) -> None:
        if interval <= timedelta(0) or commit_grace < timedelta(0):
            raise ValueError("the sample interval is positive and the commit grace not negative")
        self._db = db
        self.interval = interval
        self._commit_grace_ms = commit_grace // timedelta(milliseconds=1)
        self._depth: Deque[DepthSample] = deque(maxlen=DEPTH_SAMPLES_MAX)
        self._finished: Dict[int, Dict[str, int]] = {}
        self._upper: Optional[str] = None
        self._sampled_at = 0.0  # time.monotonic() of the last sample
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_error: Optional[str] = None

    @property
    def in_background(self) -> bool:
        """True while a thread of this process samples every interval
        (:meth:`start`); False when samples are taken only as pages ask."""
        return self._thread is not None

    # ------------------------------------------------------------ sampling

    def sample(self) -> None:
        """Take one sample now (waits for a sample already running)."""
        with self._lock:
            self._sample_locked()

    def sample_if_due(self) -> None:
        """Take a sample if the last one is older than the interval and no
        other thread is taking one."""
        if time.monotonic() - self._sampled_at < self.interval.total_seconds():
            return
        if self._lock.acquire(blocking=False):
            try:
                self._sample_locked()
            finally:
                self._lock.release()

    def _sample_locked(self) -> None:
        self._sampled_at = time.monotonic()
        try:
            queues = self._db.queues.list()
            with self._db.transaction() as t:
                [(upper, hour_ago, now_ms)] = t.execute(_BOUNDS_SQL, [self._commit_grace_ms])
                assert upper is not None and hour_ago is not None and now_ms is not None
                rows = t.execute(_FINISHED_SQL, [self._upper or hour_ago, upper])
        except payq.Error as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("payq dashboard: throughput sample failed: %s", self.last_error)
            return
        self.last_error = None
        self._upper = upper
        self._depth.append(DepthSample(
            at_ms=int(now_ms),
            pending=sum(q.pending for q in queues), runnable=sum(q.runnable for q in queues),
            running=sum(q.running for q in queues), held=sum(q.held for q in queues),
            dead=sum(q.dead for q in queues), needs_review=sum(q.needs_review for q in queues)))
        for minute_ms, state, count in rows:
            assert minute_ms is not None and state is not None and count is not None
            bucket = self._finished.setdefault(int(minute_ms), {})
            bucket[state] = bucket.get(state, 0) + int(count)
        oldest_kept = int(now_ms) - MINUTES_KEPT * 60_000
        for minute in [m for m in self._finished if m < oldest_kept]:
            del self._finished[minute]

    # ------------------------------------------------------------ reading

    def snapshot(self) -> Dict[str, Any]:
        """The history as JSON-ready data: ``depth`` samples and ``finished``
        per minute (every minute of the last hour, zeros included)."""
        with self._lock:
            depth = list(self._depth)
            finished = {minute: dict(counts) for minute, counts in self._finished.items()}
        minutes: List[Dict[str, int]] = []
        if depth:
            last_minute = depth[-1].at_ms // 60_000 * 60_000
            for i in range(MINUTES_KEPT - 1, -1, -1):
                minute = last_minute - i * 60_000
                counts = finished.get(minute, {})
                minutes.append({"t": minute, "succeeded": counts.get("succeeded", 0),
                                "dead": counts.get("dead", 0), "cancelled": counts.get("cancelled", 0)})
        return {
            "interval_s": self.interval.total_seconds(),
            "depth": [{"t": s.at_ms, "pending": s.pending, "runnable": s.runnable, "running": s.running,
                       "held": s.held, "dead": s.dead, "needs_review": s.needs_review} for s in depth],
            "finished": minutes,
            "error": self.last_error,
        }

    # ------------------------------------------------------------ the thread

    def start(self) -> "Throughput":
        """Sample every interval from a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="payq-dashboard-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # the chart may go stale; the thread must not die
                log.exception("payq dashboard: throughput sampler")
            if self._stop.wait(self.interval.total_seconds()):
                return

    def stop(self) -> None:
        """Stop the thread and wait for it (a sample in progress finishes)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def __enter__(self) -> "Throughput":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()
