"""Metrics in the Prometheus text format (version 0.0.4).

:func:`render` reads what the database knows (queue depth and lag, paused
queues, tasks waiting for an operator, ledger transactions written) and,
given a worker, that worker's counters since it started. :class:`MetricsServer`
serves it on ``/metrics`` from a background thread; ``payq worker
--metrics-port N`` starts one, ``payq stats --prometheus`` prints the same
text once.

Every scrape runs one indexed query over live tasks (finished tasks are not
read), so scraping every few seconds is cheap even with a long history.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from payq._native import core
from payq._serving import BoundedThreadingMixIn, ServingLimits, ServingThread, bounded, listening
from payq.errors import Error, InvalidArgument

__all__ = ["render", "MetricsServer", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Worker counters (payq.Worker.stats()) exported as `payq_worker_tasks_total{outcome=...}`.
_OUTCOME_COUNTERS = {
    "succeeded": "success",
    "retried": "retry",
    "failed": "fail",
    "unknown": "unknown",
}
# Other worker counters, each its own metric: (stats key, name, help).
_WORKER_COUNTERS = [
    ("claimed", "payq_worker_claimed_total", "Tasks claimed by this worker."),
    ("unknown_kind", "payq_worker_unknown_kind_total", "Tasks failed because no handler knew their kind."),
    ("handler_exceptions", "payq_worker_handler_exceptions_total", "Handler calls that raised."),
    ("lease_lost", "payq_worker_lease_lost_total", "Completions refused because the lease was taken over."),
    ("given_back", "payq_worker_given_back_total", "Claimed tasks handed back unstarted at shutdown."),
    ("complete_errors", "payq_worker_complete_errors_total", "Completions not recorded (database error)."),
    ("database_errors", "payq_worker_database_errors_total", "Claim or connection failures."),
    ("maintenance_ticks", "payq_worker_maintenance_ticks_total", "Maintenance rounds run as the elected leader."),
    ("leases_rescued", "payq_worker_leases_rescued_total",
     "Expired leases rescued by this worker's maintenance (a worker died mid-call): recorded as unknown."),
    ("holds_expired", "payq_worker_holds_expired_total", "Ledger holds expired by this worker's maintenance."),
    ("tasks_pruned", "payq_worker_tasks_pruned_total", "Finished tasks pruned by this worker's maintenance."),
    ("inbox_events_pruned", "payq_worker_inbox_events_pruned_total",
     "Provider callbacks older than the inbox retention, pruned by this worker's maintenance."),
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


class _Text:
    """Collects metric families; each family's HELP/TYPE is written once."""

    def __init__(self) -> None:
        self._families: Dict[str, Tuple[str, str, List[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: Optional[Mapping[str, str]] = None, *, suffix: str = "") -> None:
        """A sample of family ``name``; ``suffix`` names a histogram's
        ``_bucket``, ``_sum`` and ``_count`` samples."""
        family = self._families.setdefault(name, (kind, help_text, []))
        number = repr(float(value)) if isinstance(value, float) else str(int(value))
        family[2].append(f"{name}{suffix}{_labels(labels or {})} {number}")

    def declare(self, name: str, kind: str, help_text: str) -> None:
        """Declare family ``name`` (its HELP/TYPE is written even without samples)."""
        self._families.setdefault(name, (kind, help_text, []))

    def text(self) -> str:
        """Every family, in the order first declared or added, as Prometheus text."""
        lines: List[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def render(db: Any, *, worker_stats: Optional[Mapping[str, Any]] = None,
           worker_id: Optional[str] = None) -> str:
    """The metrics of ``db`` (a :class:`payq.Database`) and, if given, of one
    worker (its :meth:`payq.Worker.stats` and id) as Prometheus text."""
    out = _text_for_queues(db.queues.list())
    with db.transaction() as t:
        rows = t.execute("SELECT last_value, is_called FROM @schema@.ledger_transaction_id_seq")
    written = int(rows[0][0]) if rows and rows[0][1] in ("t", "true", True) else 0
    out.add("payq_ledger_transactions_total", "counter",
            "Ledger transactions (postings, captures, reversals) written, from the journal's id sequence.", written)
    if worker_stats is not None:
        _add_worker(out, worker_stats, worker_id or "")
    return out.text()


def _text_for_queues(queues: Iterable[Any]) -> _Text:
    out = _Text()
    out.declare("payq_queue_tasks", "gauge", "Live tasks in a queue by state (finished tasks are not counted).")
    out.declare("payq_queue_runnable_tasks", "gauge", "Pending tasks that are due now.")
    out.declare("payq_queue_oldest_runnable_age_seconds", "gauge",
                "How long the oldest due task has waited (0 when nothing is due).")
    out.declare("payq_queue_paused", "gauge", "1 while the queue takes no claims (operator pause or back-pressure).")
    out.declare("payq_queue_started_last_minute", "gauge",
                "Claims in the last minute (queues with rate or amount limits only).")
    for q in queues:
        labels = {"queue": q.name}
        for state in ("pending", "running", "held", "dead", "needs_review"):
            out.add("payq_queue_tasks", "gauge", "", getattr(q, state), {"queue": q.name, "state": state})
        out.add("payq_queue_runnable_tasks", "gauge", "", q.runnable, labels)
        age = q.oldest_runnable_age.total_seconds() if q.oldest_runnable_age is not None else 0.0
        out.add("payq_queue_oldest_runnable_age_seconds", "gauge", "", float(age), labels)
        out.add("payq_queue_paused", "gauge", "", 1 if (q.paused or q.paused_until is not None) else 0, labels)
        out.add("payq_queue_started_last_minute", "gauge", "", q.started_last_minute, labels)
    return out


def _add_worker(out: _Text, stats: Mapping[str, Any], worker_id: str) -> None:
    base = {"worker": worker_id}
    out.declare("payq_worker_tasks_total", "counter", "Attempts this worker finished, by outcome.")
    for key, outcome in _OUTCOME_COUNTERS.items():
        out.add("payq_worker_tasks_total", "counter", "", int(stats.get(key, 0)), {**base, "outcome": outcome})
    for key, name, help_text in _WORKER_COUNTERS:
        out.add(name, "counter", help_text, int(stats.get(key, 0)), base)
    out.add("payq_worker_in_flight", "gauge", "Handlers running now.", int(stats.get("in_flight", 0)), base)
    _add_duration_histogram(out, stats, base)
    out.add("payq_worker_maintenance_leader", "gauge", "1 while this worker is the elected maintenance leader.",
            1 if stats.get("maintenance_leader") else 0, base)


def _add_duration_histogram(out: _Text, stats: Mapping[str, Any], base: Mapping[str, str]) -> None:
    """``payq_worker_attempt_duration_seconds``: the worker keeps a count
    per bucket; Prometheus wants them cumulative, with ``+Inf`` = total."""
    counts = list(stats.get("attempt_duration_counts") or [])
    bounds_ms = list(getattr(core, "attempt_duration_bounds_ms", []))
    if len(counts) != len(bounds_ms) + 1:
        return
    name = "payq_worker_attempt_duration_seconds"
    out.declare(name, "histogram", "How long handlers took, per attempt this worker finished.")
    running = 0
    for bound_ms, count in zip(bounds_ms + [None], counts):
        running += int(count)
        le = "+Inf" if bound_ms is None else repr(bound_ms / 1000)
        out.add(name, "histogram", "", running, {**base, "le": le}, suffix="_bucket")
    out.add(name, "histogram", "", float(int(stats.get("attempt_duration_ms_sum", 0)) / 1000), base, suffix="_sum")
    out.add(name, "histogram", "", running, base, suffix="_count")


class _MetricsHTTPServer(BoundedThreadingMixIn, HTTPServer):
    pass


class MetricsServer:
    """Serves ``/metrics`` over HTTP from a daemon thread.

    ``render`` is called on every scrape; a :class:`payq.Error` while
    rendering answers 503 with the error's text, any other exception 500
    (the scrape fails visibly, the worker runs on). ``limits``: how long a
    connection may last and how many are served at once
    (:class:`payq.ServingLimits`; its defaults when None).
    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, render_metrics: Callable[[], str], *, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[ServingLimits] = None) -> None:
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"metrics port must be 0..65535, got {port}")
        self._render = render_metrics
        self._server = listening(lambda: _MetricsHTTPServer((host, port), self._handler_class()), host, port)
        bounded(self._server, limits)
        self._serving = ServingThread(self._server, "payq-metrics")

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when given 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The ``http://host:port/metrics`` address to scrape."""
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}/metrics"

    def start(self) -> "MetricsServer":
        """Serve from a daemon thread (a no-op if already serving) and return ``self``."""
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket. Idempotent,
        and safe before :meth:`start`."""
        self._serving.stop()

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type:
        render_metrics = self._render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?", 1)[0] != "/metrics":
                    self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
                    return
                try:
                    body = render_metrics().encode()
                except Error as exc:  # the database is unreachable, a timeout, ...: try again later
                    self._answer(503, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode())
                    return
                except Exception as exc:  # noqa: BLE001 - a bug in rendering still gets an answer
                    self._answer(500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode())
                    return
                self._answer(200, CONTENT_TYPE, body)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # scrapes are not worth a log line each

        return Handler
