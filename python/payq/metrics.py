"""Metrics for Prometheus, built with ``prometheus_client``.

The series come from three places:

* The database (``payq_queue_*``, ``payq_ledger_transactions_total``,
  ``payq_tasks_enqueued_total``): the same for every process, so they are
  exported once. A worker exports them only while it is the maintenance
  leader (it holds the ``maintenance_lease`` row), so ``sum()`` counts them
  once however many workers run; ``payq stats --prometheus`` prints them
  once from anywhere. They are read at most once per ``cache_s`` (5 s by
  default) however often the endpoint is scraped.
* The process: ``payq_worker_*`` (the worker's counters since it started)
  and ``process_*`` (CPU, resident memory, open descriptors, start time).
* ``payq_build_info``: the versions of the package and of its compiled core.

No series carries a worker id: Prometheus's ``instance`` label (the address
scraped) tells the processes apart, so a restarted worker continues its
series instead of starting new ones.

:func:`registry` builds the ``prometheus_client`` registry a process
serves; :class:`MetricsServer` serves it on ``/metrics`` (``payq worker
--metrics-port N`` starts one); :func:`render` is the text of one scrape.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union, cast

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import payq
from payq._native import core
from payq._serving import ServingLimits, WsgiServer
from payq.errors import Error, InvalidArgument

__all__ = ["render", "registry", "DatabaseCollector", "WorkerCollector", "BuildInfoCollector", "MetricsServer",
           "CONTENT_TYPE", "CACHE_S_DEFAULT"]

log = logging.getLogger("payq.metrics")

# The Prometheus text format, as served for a ``render_metrics`` callable.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# How long the database-wide values are reused before the database is read
# again: shorter than any sensible scrape interval, long enough that a burst
# of scrapes (several Prometheus servers, a dashboard refreshing) costs one
# round of queries.
CACHE_S_DEFAULT = 5.0
CACHE_S_MAX = 300.0
# Refreshes whose mark is not settled yet, kept while a long transaction
# somewhere holds the oldest running xid back; beyond it the oldest marks
# are dropped (a later mark settles them all the same, only later).
_MARK_COUNT_MAX = 64
# A mark is paired with a transaction id read at least this long after it
# (see _CommittedRows): longer than a statement takes from drawing an id to
# its first write, which gives its transaction an xid.
_MARK_PAIR_AFTER_S = 1.0
# The clock of the cache and of the marks (a name of its own, so tests can move it).
_clock = time.monotonic

# Worker counters (payq.Worker.stats()) exported as `payq_worker_tasks_total{outcome=...}`.
_OUTCOME_COUNTERS = {
    "succeeded": "success",
    "retried": "retry",
    "failed": "fail",
    "unknown": "unknown",
}
# Other worker counters, each its own metric: (stats key, name without _total, help).
_WORKER_COUNTERS = [
    ("claimed", "payq_worker_claimed", "Tasks claimed by this worker."),
    ("unknown_kind", "payq_worker_unknown_kind", "Tasks failed because no handler knew their kind."),
    ("handler_exceptions", "payq_worker_handler_exceptions", "Handler calls that raised."),
    ("lease_lost", "payq_worker_lease_lost", "Completions refused because the lease was taken over."),
    ("given_back", "payq_worker_given_back", "Claimed tasks handed back unstarted at shutdown."),
    ("complete_errors", "payq_worker_complete_errors", "Completions not recorded (database error)."),
    ("database_errors", "payq_worker_database_errors", "Claim or connection failures."),
    ("maintenance_ticks", "payq_worker_maintenance_ticks", "Maintenance rounds run as the elected leader."),
    ("leases_rescued", "payq_worker_leases_rescued",
     "Expired leases rescued by this worker's maintenance (a worker died mid-call): recorded as unknown."),
    ("holds_expired", "payq_worker_holds_expired", "Ledger holds expired by this worker's maintenance."),
    ("tasks_pruned", "payq_worker_tasks_pruned", "Finished tasks pruned by this worker's maintenance."),
    ("inbox_events_pruned", "payq_worker_inbox_events_pruned",
     "Provider callbacks older than the inbox retention, pruned by this worker's maintenance."),
]

# Who holds the maintenance lease now (migration 010); no row while nobody does.
_SQL_LEASE_HOLDER = "SELECT holder FROM @schema@.maintenance_lease WHERE expires_at > now()"
# One statement, so every mark is read at one moment: this transaction's
# xid (every xid handed out before is lower), the oldest xid still running
# (every lower one has ended), and the highest key handed out so far in
# each counted table: ledger transaction ids, task ids (a sequence with the
# default cache of 1, so no session holds ids back) and claim start times
# in microseconds.
_SQL_MARKS = """
SELECT pg_current_xact_id()::text,
       pg_snapshot_xmin(pg_current_snapshot())::text,
       (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
        FROM @schema@.ledger_transaction_id_seq)::text,
       (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM @schema@.task_id_seq)::text,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text"""
# Each counting statement: the rows above the floor $1, by label, and how
# many of them are at or below $2 (the mark that settles now).
# Committed ledger transactions: one operation row each, read through the
# unique index on transaction_id (an index-only scan of the new range).
_SQL_LEDGER_COUNT = """
SELECT count(*) FILTER (WHERE transaction_id <= $2::bigint), count(*)
FROM @schema@.operation WHERE transaction_id > $1::bigint"""
_SQL_TASKS_COUNT = """
SELECT queue, kind, count(*) FILTER (WHERE id <= $2::bigint), count(*)
FROM @schema@.task WHERE id > $1::bigint GROUP BY queue, kind"""
# Claims of queues with a rate or amount limit (the ones whose starts are
# recorded), by claim transaction start; the table keeps about a minute.
_SQL_STARTS_COUNT = """
SELECT queue, count(*) FILTER (WHERE (extract(epoch FROM started_at) * 1000000)::bigint <= $2::bigint), count(*)
FROM @schema@.queue_start WHERE (extract(epoch FROM started_at) * 1000000)::bigint > $1::bigint GROUP BY queue"""

Labels = Tuple[str, ...]


class _CommittedRows:
    """A counter of the committed rows of one table, by labels, that reads
    only the rows added since it last settled, never the whole table again.

    Each row has a key its transaction takes before it commits (a sequence
    id, a start time), so rows commit out of key order: below the highest
    key seen, a row may still appear. So every refresh records a *mark*
    (the highest key handed out then); a refresh at least a second later
    pairs it with its own xid, by when every transaction holding a key up
    to the mark has an xid (it takes one at its first write, in the
    statement that drew the key). Once the oldest running xid has passed
    that xid, every such
    transaction has ended: no row up to the mark can appear any more, the
    mark becomes the *floor* and the rows up to it are counted for good.
    Rows above the floor are counted again at each refresh (a few seconds
    of writes), so a late commit is counted when it lands, and a rolled
    back one never.

    ``floor``: count the rows above it (0: from the start); None: only the
    rows written from the first refresh on.
    """

    def __init__(self, count_sql: str, floor: Optional[int]) -> None:
        self._count_sql = count_sql
        self._floor = floor
        # (mark, when read, the xid paired with it or None)
        self._marks: Deque[Tuple[int, float, Optional[int]]] = collections.deque(maxlen=_MARK_COUNT_MAX)
        self._settled: Dict[Labels, int] = {}
        self.values: Dict[Labels, int] = {}

    def start(self, mark: int) -> None:
        """Count from ``mark`` on if no floor was given, and settle it later."""
        if self._floor is None:
            self._floor = mark
        self._marks.append((mark, _clock(), None))

    def refresh(self, t: Any, mark: int, xid: int, xmin: int) -> None:
        """Count again what is above the floor, and move the floor up to the
        newest mark that has settled; ``t`` is a transaction begun after
        ``xid`` and ``xmin`` were read."""
        floor = mark if self._floor is None else self._floor
        now = _clock()
        marks = [(m, read_at, paired if paired is not None or now - read_at < _MARK_PAIR_AFTER_S else xid)
                 for m, read_at, paired in self._marks]
        settle_to = floor
        while marks:
            oldest_mark, _, paired_xid = marks[0]
            if paired_xid is None or paired_xid > xmin:
                break
            settle_to = max(settle_to, oldest_mark)
            marks.pop(0)
        settled = dict(self._settled)
        values = dict(self.values)
        for row in t.execute(self._count_sql, [floor, settle_to]):
            labels, now_settled, above = tuple(row[:-2]), int(row[-2]), int(row[-1])
            settled[labels] = settled.get(labels, 0) + now_settled
            # Never lower: rows above a floor held back for days could be
            # pruned before they settle.
            values[labels] = max(values.get(labels, 0), settled[labels] + above - now_settled)
        # The new state only once every read succeeded.
        self._floor, self._settled, self.values = settle_to, settled, values
        self._marks = collections.deque(marks + [(mark, now, None)], maxlen=_MARK_COUNT_MAX)


class _DatabaseValues:
    """One reading of the database-wide values."""

    def __init__(self, queues: List[Any], ledger: int, enqueued: Dict[Labels, int],
                 started: Dict[Labels, int]) -> None:
        self.queues = queues
        self.ledger = ledger
        self.enqueued = enqueued
        self.started = started


class DatabaseCollector(Collector):
    """The database-wide series of ``db`` (a :class:`payq.Database`):
    queue depth, lag and pauses, committed ledger transactions, tasks
    enqueued and claims started per queue.

    ``leader_of``: a worker id; the series are then exported only while that
    worker holds the maintenance lease, so that of many workers exactly one
    exports them (None: always). ``cache_s``: how long one reading of the
    database is reused (0: read at every collect). ``raise_errors``: a
    :class:`payq.Error` while reading propagates (a one-shot export should
    fail); otherwise it is logged and ``payq_database_up`` says 0, so the
    process's own series are still scraped while the database is down.

    The counters that cannot be read whole from the database (tasks
    enqueued, claims started: their rows are pruned) count from when the
    collector was made; the ledger's counts every committed transaction.
    """

    def __init__(self, db: Any, *, leader_of: Optional[str] = None, cache_s: float = CACHE_S_DEFAULT,
                 raise_errors: bool = False) -> None:
        if isinstance(cache_s, bool) or not isinstance(cache_s, (int, float)) or not 0 <= cache_s <= CACHE_S_MAX:
            raise InvalidArgument(f"cache_s must be 0..{CACHE_S_MAX:g} seconds, got {cache_s!r}")
        if leader_of is not None and (not isinstance(leader_of, str) or not leader_of):
            raise InvalidArgument("leader_of must be a worker id (a non-empty string) or None")
        self._db = db
        self._leader_of = leader_of
        self._cache_s = float(cache_s)
        self._raise_errors = raise_errors
        self._ledger = _CommittedRows(_SQL_LEDGER_COUNT, 0)
        self._enqueued = _CommittedRows(_SQL_TASKS_COUNT, None)
        self._started = _CommittedRows(_SQL_STARTS_COUNT, None)
        # One reading at a time, shared by concurrent scrapes: (monotonic
        # time read, values or None when not exported, error text or None).
        self._lock = threading.Lock()
        self._reading: Optional[Tuple[float, Optional[_DatabaseValues], Optional[str]]] = None
        if not raise_errors:
            self._start()

    def _start(self) -> None:
        """Where the since-start counters begin: now, not at the first
        scrape, which may come long after (or never, on a worker that does
        not lead). A database error leaves it to the first reading."""
        try:
            with self._db.transaction() as t:
                _, _, ledger_mark, task_mark, start_mark = (int(v) for v in t.execute(_SQL_MARKS)[0])
        except Error as exc:
            log.warning("reading where the metrics counters start failed: %s: %s", type(exc).__name__, exc)
            return
        self._ledger.start(ledger_mark)
        self._enqueued.start(task_mark)
        self._started.start(start_mark)

    def collect(self) -> Iterator[Metric]:
        """The series, from the cached reading while it is fresh."""
        with self._lock:
            now = _clock()
            if self._reading is None or now - self._reading[0] >= self._cache_s:
                self._reading = (now, *self._read())
            _, values, error = self._reading
        if not self._raise_errors:
            up = GaugeMetricFamily("payq_database_up",
                                   "1 when this process's last reading of the database-wide metrics succeeded.")
            up.add_metric([], 0 if error else 1)
            yield up
        if values is not None:
            yield from _database_families(values)

    def _read(self) -> Tuple[Optional[_DatabaseValues], Optional[str]]:
        try:
            return self._read_database(), None
        except Error as exc:
            if self._raise_errors:
                raise
            log.warning("reading the database-wide metrics failed: %s: %s", type(exc).__name__, exc)
            return None, f"{type(exc).__name__}: {exc}"

    def _read_database(self) -> Optional[_DatabaseValues]:
        with self._db.transaction() as t:
            # Each count reads a narrow key range whose bound is a
            # parameter; a generic plan would guess a third of the table
            # and scan all of it (measured: 14 ms instead of 0.3 ms on a
            # million tasks).
            t.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            if self._leader_of is not None:
                holder = t.execute(_SQL_LEASE_HOLDER)
                if not holder or holder[0][0] != self._leader_of:
                    return None
            xid, xmin, ledger_mark, task_mark, start_mark = (int(v) for v in t.execute(_SQL_MARKS)[0])
            self._ledger.refresh(t, ledger_mark, xid, xmin)
            self._enqueued.refresh(t, task_mark, xid, xmin)
            self._started.refresh(t, start_mark, xid, xmin)
        return _DatabaseValues(self._db.queues.list(), self._ledger.values.get((), 0), dict(self._enqueued.values),
                               dict(self._started.values))


def _database_families(values: _DatabaseValues) -> Iterator[Metric]:
    tasks = GaugeMetricFamily("payq_queue_tasks", "Live tasks in a queue by state (finished tasks are not counted).",
                              labels=["queue", "state"])
    runnable = GaugeMetricFamily("payq_queue_runnable_tasks", "Pending tasks that are due now.", labels=["queue"])
    age = GaugeMetricFamily("payq_queue_oldest_runnable_age_seconds",
                            "How long the oldest due task has waited (0 when nothing is due).", labels=["queue"])
    paused = GaugeMetricFamily("payq_queue_paused",
                               "1 while the queue takes no claims (operator pause or back-pressure).",
                               labels=["queue"])
    for q in values.queues:
        for state in ("pending", "running", "held", "dead", "needs_review"):
            tasks.add_metric([q.name, state], getattr(q, state))
        runnable.add_metric([q.name], q.runnable)
        age.add_metric([q.name], q.oldest_runnable_age.total_seconds() if q.oldest_runnable_age is not None else 0.0)
        paused.add_metric([q.name], 1 if (q.paused or q.paused_until is not None) else 0)
    yield from (tasks, runnable, age, paused)
    started = CounterMetricFamily(
        "payq_queue_started",
        "Claims started in queues with a rate or amount limit (the ones whose starts are recorded), "
        "since this exporter began counting.", labels=["queue"])
    for (queue,), count in sorted(values.started.items()):
        started.add_metric([queue], count)
    yield started
    ledger = CounterMetricFamily("payq_ledger_transactions",
                                 "Committed ledger transactions (postings, captures, reversals).")
    ledger.add_metric([], values.ledger)
    yield ledger
    enqueued = CounterMetricFamily("payq_tasks_enqueued",
                                   "Tasks committed to the outbox, by any process, since this exporter began counting.",
                                   labels=["queue", "kind"])
    for (queue, kind), count in sorted(values.enqueued.items()):
        enqueued.add_metric([queue, kind], count)
    yield enqueued


class WorkerCollector(Collector):
    """The counters of one worker process (a :class:`payq.Worker`, or
    anything with its ``stats()``), read at each collect."""

    def __init__(self, worker: Any) -> None:
        if not callable(getattr(worker, "stats", None)):
            raise InvalidArgument("worker must be a payq.Worker (an object with stats())")
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        """The worker's series."""
        stats = self._worker.stats()
        outcomes = CounterMetricFamily("payq_worker_tasks", "Attempts this worker finished, by outcome.",
                                       labels=["outcome"])
        for key, outcome in _OUTCOME_COUNTERS.items():
            outcomes.add_metric([outcome], int(stats.get(key, 0)))
        yield outcomes
        for key, name, help_text in _WORKER_COUNTERS:
            yield CounterMetricFamily(name, help_text, value=int(stats.get(key, 0)))
        yield GaugeMetricFamily("payq_worker_in_flight", "Handlers running now.", value=int(stats.get("in_flight", 0)))
        histogram = _duration_histogram(stats)
        if histogram is not None:
            yield histogram
        yield GaugeMetricFamily("payq_worker_maintenance_leader",
                                "1 while this worker is the elected maintenance leader.",
                                value=1 if stats.get("maintenance_leader") else 0)


def _duration_histogram(stats: Dict[str, Any]) -> Optional[Metric]:
    """``payq_worker_attempt_duration_seconds``: the worker keeps a count per
    bucket; Prometheus wants them cumulative, with ``+Inf`` the total."""
    counts = [int(c) for c in stats.get("attempt_duration_counts") or []]
    bounds = [float(b) for b in core.attempt_duration_bounds_seconds]
    if len(counts) != len(bounds) + 1:
        return None
    buckets = []
    running = 0
    for bound, count in zip(bounds + [float("inf")], counts):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    histogram = HistogramMetricFamily("payq_worker_attempt_duration_seconds",
                                      "How long handlers took, per attempt this worker finished.")
    histogram.add_metric([], buckets, float(stats.get("attempt_duration_seconds_sum", 0.0)))
    return histogram


class BuildInfoCollector(Collector):
    """``payq_build_info{version=..., core=...} 1``: the Python package's
    version and the version its compiled core was built as."""

    def collect(self) -> Iterator[Metric]:
        """The one series."""
        info = InfoMetricFamily("payq_build", "payq's package version and its compiled core's version.")
        info.add_metric([], {"version": payq.__version__, "core": str(core.library_versions()["payq"])})
        yield info


def registry(db: Any, *, worker: Any = None, cache_s: float = CACHE_S_DEFAULT,
             process: bool = True) -> CollectorRegistry:
    """A ``prometheus_client`` registry of payq's metrics for one process.

    With ``worker`` (a :class:`payq.Worker`): its counters, and the
    database-wide series only while it is the maintenance leader. Without:
    the database-wide series always (a separate exporter). ``process``:
    include ``process_*`` (CPU, memory, descriptors, start time).
    """
    out = CollectorRegistry(auto_describe=False)
    leader_of = None
    if worker is not None:
        out.register(WorkerCollector(worker))
        leader_of = worker.worker_id
    out.register(DatabaseCollector(db, leader_of=leader_of, cache_s=cache_s))
    out.register(BuildInfoCollector())
    if process:
        ProcessCollector(registry=out)
    return out


def render(db: Any, *, worker: Any = None) -> str:
    """The metrics of ``db`` (a :class:`payq.Database`) as Prometheus text,
    read now; with ``worker``, also its counters, and the database-wide
    series only if it is the maintenance leader. A :class:`payq.Error` while
    reading the database propagates. For ``payq stats --prometheus``: a
    process that serves metrics keeps one :func:`registry` instead (its
    counters are kept between scrapes)."""
    out = CollectorRegistry(auto_describe=False)
    if worker is not None:
        out.register(WorkerCollector(worker))
    out.register(DatabaseCollector(db, leader_of=None if worker is None else worker.worker_id, cache_s=0,
                                   raise_errors=True))
    out.register(BuildInfoCollector())
    return generate_latest(out).decode()


_TEXT = "text/plain; charset=utf-8"


def _answer(start_response: Callable[..., Any], status: str, content_type: str, body: bytes) -> List[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _metrics_app(source: Union[Callable[[], str], CollectorRegistry]) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of ``/metrics``: a registry's series (text or
    OpenMetrics as the scraper asks, compressed if it accepts gzip), or the
    text a callable renders."""
    registry_app = make_wsgi_app(source) if isinstance(source, CollectorRegistry) else None

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _answer(start_response, "404 Not Found", _TEXT, b"not found: try /metrics\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", _TEXT, b"GET /metrics\n")
        try:
            if registry_app is not None:
                # Collecting happens before start_response is called: an
                # error leaves the answer to the handlers below.
                return cast(Iterable[bytes], registry_app(environ, start_response))
            body = source().encode()  # type: ignore[operator]
        except Error as exc:  # the database is unreachable, a timeout, ...: try again later
            return _answer(start_response, "503 Service Unavailable", _TEXT,
                           f"{type(exc).__name__}: {exc}\n".encode())
        except Exception as exc:  # noqa: BLE001 - a bug in rendering still gets an answer
            log.exception("rendering the metrics failed")
            return _answer(start_response, "500 Internal Server Error", _TEXT,
                           f"{type(exc).__name__}: {exc}\n".encode())
        return _answer(start_response, "200 OK", CONTENT_TYPE, body)

    return app


class MetricsServer:
    """Serves ``/metrics`` over HTTP (waitress, from background threads).

    ``render_metrics``: a ``prometheus_client`` registry (see
    :func:`registry`), or a callable returning Prometheus text, called at
    every scrape. A :class:`payq.Error` while collecting answers 503 with
    the error's text, any other exception 500 (the scrape fails visibly,
    the worker runs on). ``limits``: how long a connection may last and how
    many are served at once (:class:`payq.ServingLimits`; its defaults when
    None). Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, render_metrics: Union[Callable[[], str], CollectorRegistry], *, host: str = "127.0.0.1",
                 port: int = 0, limits: Optional[ServingLimits] = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"metrics port must be 0..65535, got {port!r}")
        if not isinstance(render_metrics, CollectorRegistry) and not callable(render_metrics):
            raise InvalidArgument("render_metrics must be a prometheus_client registry or a callable")
        self._server = WsgiServer(_metrics_app(render_metrics), host=host, port=port, limits=limits,
                                  name="payq-metrics")

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when given 0)."""
        return self._server.port

    @property
    def url(self) -> str:
        """The ``http://host:port/metrics`` address to scrape."""
        return self._server.url + "metrics"

    def start(self) -> "MetricsServer":
        """Serve from background threads (a no-op if already serving) and return ``self``."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving, join the threads and close the socket. Idempotent,
        and safe before :meth:`start`."""
        self._server.stop()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
