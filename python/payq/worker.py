"""Handlers and the worker: business logic in Python, the hot loop in C++.

Register handlers with a decorator; ``payq worker --app myapp.tasks`` imports
``myapp.tasks`` and runs them::

    import payq

    @payq.handler("sms.send", max_delay=timedelta(minutes=10))
    def send_sms(task: payq.TaskRun) -> dict:
        response = provider.send(task.payload["to"], key=task.idempotency_key)
        if response.status == 429:
            raise payq.Retry("rate limited", after=timedelta(seconds=30))
        if response.status == 400:
            raise payq.Fail("invalid number")          # never applied: compensate
        if response.timed_out_after_sending:
            raise payq.Unknown("timeout after send")   # may be applied: same key, no compensation
        return {"message_id": response.id}             # success: stored as the result

The C++ engine claims tasks, holds the GIL only while calling the handler,
and records the outcome (with the task's ledger settlement) in one
transaction. Any other exception means ``retry``. A result that cannot be
stored as JSON is ``unknown``, never a success; async handlers are refused.

A kind whose side effect is one HTTP call needs no Python at all:
``payq.http_handler("payout", url=..., ...)`` registers the built-in C++
HTTP handler (see :mod:`payq.http`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback as _traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from payq import _args
from payq import http as _http
from payq._native import core
from payq.errors import InvalidArgument
from payq.outbox import Task

__all__ = [
    "Retry",
    "Fail",
    "Unknown",
    "TaskRun",
    "Registry",
    "registry",
    "handler",
    "http_handler",
    "Worker",
]

# (outcome, result JSON, error, retry delay in ms or None[, traceback]).
Reported = Optional[Union[Tuple[str, str, str, Optional[int]], Tuple[str, str, str, Optional[int], str]]]
# A handler's traceback keeps its innermost frames, at most this many; the
# core stores its last 8 KiB (traceback_bytes_max).
_TRACEBACK_FRAMES_MAX = 30
_handler_log = logging.getLogger("payq.worker")


class _OutcomeSignal(Exception):
    outcome = "retry"

    def __init__(self, reason: str = "", *, after: Optional[timedelta] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class Retry(_OutcomeSignal):
    """Raise from a handler: definitely not applied; try again after a
    backoff (or ``after``)."""

    outcome = "retry"


class Fail(_OutcomeSignal):
    """Raise from a handler: definitely not applied and never will be; the
    task goes dead and its settlement's failure side runs."""

    outcome = "fail"


class Unknown(_OutcomeSignal):
    """Raise from a handler: it may have been applied (a timeout after
    sending). Retried with the same idempotency key, never compensated;
    when attempts run out the task waits for an operator."""

    outcome = "unknown"


class TaskRun:
    """The task a handler runs: the task's fields (``payload``,
    ``idempotency_key``, ``attempt``, ...) plus its lease.

    A handler whose side effect is itself a database write calls
    :meth:`complete` inside its own business transaction: the completion
    counts only while this attempt still holds the lease, so a zombie worker
    whose lease was taken over raises :class:`payq.LeaseLost` and its
    business transaction rolls back with it.
    """

    def __init__(self, task: Task, worker_id: str, lease_token: int) -> None:
        self.task = task
        self.worker_id = worker_id
        self.lease_token = lease_token
        self.completed = False
        self._started = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def complete(self, transaction: Any, result: Any = None) -> None:
        """Record success inside ``transaction`` (a ``payq.Transaction`` or
        an application connection's executor from ``payq.app_executor``)."""
        target = getattr(transaction, "_tx", transaction)
        duration_ms = int((time.monotonic() - self._started) * 1000)
        core.outbox_complete(target, task_id=self.task.id, lease_token=self.lease_token, attempt=self.task.attempt,
                             outcome="success", result_json=json.dumps(result, allow_nan=False),
                             worker_id=self.worker_id, duration_ms=duration_ms)
        self.completed = True


HandlerFunction = Callable[[TaskRun], Any]


@dataclass
class _Registration:
    function: HandlerFunction
    base_delay: Optional[timedelta]
    max_delay: Optional[timedelta]
    multiplier: Optional[int]
    batched_completion: bool = False


@dataclass
class _HttpRegistration:
    kind: _http.HttpKind
    base_delay: Optional[timedelta]
    max_delay: Optional[timedelta]
    multiplier: Optional[int]


def _ms(value: Optional[timedelta]) -> Optional[int]:
    return None if value is None else value // timedelta(milliseconds=1)


_ERROR_CHARS_MAX = 4000
_ASYNC_REFUSED = "async handlers are not supported yet: register a plain function"


def _is_async(function: Any) -> bool:
    """Whether calling ``function`` gives an awaitable (or an async
    generator) instead of running the handler: a coroutine function, a
    callable whose ``__call__`` is one, or a ``functools.partial`` of
    either."""
    while isinstance(function, functools.partial):
        function = function.func
    call = getattr(type(function), "__call__", None)
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (function, call))


def _unstored(error: str) -> Reported:
    """The report for a result that cannot be stored: ``unknown``, because
    the handler may have acted. Never a success, whose settlement would
    capture the task's hold for a result nobody can see; ``unknown``
    settles nothing and is retried with the same idempotency key (or waits
    for an operator after the last attempt)."""
    return ("unknown", "null", error[:_ERROR_CHARS_MAX], None)


def _result_report(result: Any) -> Reported:
    """The report for what a handler returned."""
    if inspect.isawaitable(result) or inspect.isasyncgen(result):
        # A sync wrapper around async code: nothing awaited it here, so the
        # coroutine never ran, but the wrapper itself may have acted. Closing
        # it spares the "never awaited" warning.
        if hasattr(result, "close"):
            result.close()
        return _unstored(f"the handler returned {type(result).__name__}, not a result; {_ASYNC_REFUSED}")
    try:
        return ("success", json.dumps(result, allow_nan=False), "", None)
    except (TypeError, ValueError, RecursionError) as exc:
        return _unstored(f"result could not be stored as JSON: {exc}")


def _adapter(function: HandlerFunction) -> Callable[[Any, str, int], Reported]:
    """Runs ``function`` and reports its outcome as the engine expects."""

    def run(core_task: Any, worker_id: str, lease_token: int) -> Reported:
        """Run ``function`` on one claimed task: ``None`` if it completed
        the task itself, else ``(outcome, result JSON, error, retry delay in
        milliseconds or None)``."""
        task = TaskRun(Task._from_core(core_task), worker_id, lease_token)
        try:
            result = function(task)
        except _OutcomeSignal as signal_:
            return (signal_.outcome, "null", signal_.reason or type(signal_).__name__, _ms(signal_.after))
        except Exception as exc:  # noqa: BLE001 - any other failure means retry
            trace = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                        limit=-_TRACEBACK_FRAMES_MAX))
            _handler_log.warning("task %d (%s), attempt %d: the handler raised", task.id, task.kind,
                                 task.attempt, exc_info=exc)
            # PostgreSQL text holds no NUL; shown escaped, as repr() would.
            return ("retry", "null", f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS_MAX], None,
                    trace.replace("\x00", "\\x00"))
        if task.completed:
            return None
        return _result_report(result)

    return run


class Registry:
    """Handlers by task kind."""

    def __init__(self) -> None:
        self._handlers: Dict[str, Union[_Registration, _HttpRegistration]] = {}

    def handler(
        self,
        kind: str,
        *,
        base_delay: Optional[timedelta] = None,
        max_delay: Optional[timedelta] = None,
        multiplier: Optional[int] = None,
        batched_completion: bool = False,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Decorator: register the function as the handler of ``kind``, with
        an optional backoff (exponential, full jitter: a retry waits a random
        time up to ``min(max_delay, base_delay * multiplier**(attempt-1))``).

        ``batched_completion=True`` records the successes of a claimed batch
        together in one transaction instead of one transaction per task.
        Only for idempotent handlers of tasks without a settlement: a success
        waits for the end of its batch, so if the worker dies first the
        handler runs again. A task with a settlement, and any outcome other
        than success, still completes on its own.

        The handler is a plain function: an ``async def`` one (or a callable
        whose ``__call__`` is async) is refused, since nothing would await
        it. A return value that cannot be stored as JSON (or an awaitable)
        is recorded as ``unknown``, not success: the task's settlement does
        not run and the task is retried with the same idempotency key."""

        def register(function: HandlerFunction) -> HandlerFunction:
            """Register ``function`` for ``kind`` and return it unchanged;
            raises :class:`payq.InvalidArgument` if ``kind`` already has one
            or ``function`` is async (the engine calls handlers
            synchronously, so an async one would never run)."""
            if _is_async(function):
                raise InvalidArgument(f"handler for {kind!r}: {_ASYNC_REFUSED}")
            if kind in self._handlers:
                raise InvalidArgument(f"a handler for {kind!r} is already registered")
            self._handlers[kind] = _Registration(function, base_delay, max_delay, multiplier, batched_completion)
            return function

        return register

    def http(
        self,
        kind: str,
        *,
        url: str,
        method: str = "POST",
        headers: Optional[Mapping[str, Union[str, _http.SecretEnv]]] = None,
        body: Optional[str] = None,
        idempotency_header: Optional[str] = "Idempotency-Key",
        connect_timeout_ms: int = 5_000,
        timeout_ms: int = 30_000,
        response_body_bytes_max: int = 64 * 1024,
        follow_redirects: bool = False,
        ca_file: Optional[str] = None,
        status_outcomes: Optional[Mapping[_http.StatusKey, _http.OutcomeName]] = None,
        success_when: Optional[Mapping[str, _http.JsonScalar]] = None,
        success_mismatch: _http.OutcomeName = "unknown",
        error_codes: Optional[Mapping[Union[str, int], _http.OutcomeName]] = None,
        error_code_field: Optional[str] = None,
        rate_limited_pause_ms: int = 1_000,
        retry_after_ms_max: int = 600_000,
        status_url: Optional[str] = None,
        status_not_found: Iterable[int] = (404,),
        status_check: Optional[_http.StatusCheck] = None,
        base_delay: Optional[timedelta] = None,
        max_delay: Optional[timedelta] = None,
        multiplier: Optional[int] = None,
    ) -> _http.HttpKind:
        """Register ``kind`` as a call to an HTTP provider, run by the C++
        engine without Python. Checked now: a bad configuration (or a
        missing secret) raises :class:`payq.ConfigError`.

        - ``url``, ``body``: templates with ``{{payload.<path>}}`` and
          ``{{task.idempotency_key}}`` (also ``task.id``, ``kind``, ``queue``,
          ``attempt``); in the body a string is JSON-escaped (quote it in the
          template), in the URL percent-encoded. No ``body``: the payload
          JSON itself (POST, PUT, PATCH), sent as application/json.
        - ``headers``: values are templates or :func:`payq.secret_env`.
        - ``idempotency_header``: carries the task's idempotency key on
          every attempt (``None``: not sent).
        - ``connect_timeout_ms`` (connect and TLS), ``timeout_ms`` (the whole
          call; keep it below the task's timeout).
        - ``response_body_bytes_max``: the body kept as the result (64 KiB;
          longer ones are cut off and marked truncated).
        - ``follow_redirects``: GET/HEAD kinds only; otherwise a 3xx is
          ``fail`` unless ``status_outcomes`` says otherwise.
        - ``ca_file``: PEM certificate authorities to trust (TLS is always
          verified).
        - Classification: ``status_outcomes`` (``{409: "unknown",
          (500, 599): "retry"}``) before the defaults 2xx success, 3xx fail,
          429 retry, 4xx fail, 5xx unknown; ``error_codes`` maps the value of
          ``error_code_field`` (a dotted path into the JSON body; default
          the one ``success_when`` field) to an outcome and overrides the
          status; ``success_when`` fields must all match for a success,
          else ``success_mismatch``. Refused connections, DNS and TLS
          failures are ``retry``; a timeout or drop after sending is
          ``unknown``.
        - Back-pressure: a 429 (or a ``Retry-After`` on any answer but a
          success) pauses the task's queue for every worker for the
          Retry-After time (``rate_limited_pause_ms`` without one, at most
          ``retry_after_ms_max``) and retries after it.
        - Status check, before paying again after an ``unknown`` attempt:
          ``status_url`` (a GET template; ``status_not_found`` statuses mean
          never applied: pay again with the same key; a 2xx classified
          success is applied, fail is failed; anything else is ``unknown``)
          or ``status_check``, a callable (see :data:`payq.http.StatusCheck`).
        - ``base_delay``, ``max_delay``, ``multiplier``: the retry backoff,
          as for :meth:`handler`.

        Returns the compiled kind. See ``docs/http-handler.md``.
        """
        if kind in self._handlers:
            raise InvalidArgument(f"a handler for {kind!r} is already registered")
        compiled = _http.compile_kind(
            url=url, method=method, headers=headers, body=body, idempotency_header=idempotency_header,
            connect_timeout_ms=connect_timeout_ms, timeout_ms=timeout_ms,
            response_body_bytes_max=response_body_bytes_max, follow_redirects=follow_redirects, ca_file=ca_file,
            status_outcomes=status_outcomes, success_when=success_when, success_mismatch=success_mismatch,
            error_codes=error_codes, error_code_field=error_code_field,
            rate_limited_pause_ms=rate_limited_pause_ms, retry_after_ms_max=retry_after_ms_max,
            status_url=status_url, status_not_found=status_not_found, status_check=status_check,
        )
        self._handlers[kind] = _HttpRegistration(compiled, base_delay, max_delay, multiplier)
        return compiled

    def kinds(self) -> List[str]:
        """The registered task kinds (Python and HTTP), sorted."""
        return sorted(self._handlers)

    def _to_core(self) -> "core.HandlerRegistry":
        registry = core.HandlerRegistry()
        # One client (one event-loop thread) for every HTTP kind of a worker.
        client = None
        for kind, r in self._handlers.items():
            if isinstance(r, _HttpRegistration):
                client = client or core.HttpClient()
                _http._add_to_core(registry, kind, r.kind, client, r.base_delay, r.max_delay, r.multiplier)
            else:
                registry.add_python(kind, _adapter(r.function), _ms(r.base_delay), _ms(r.max_delay), r.multiplier,
                                    r.batched_completion)
        return registry


registry = Registry()
"""The default registry, used by ``payq.handler`` and ``payq worker``."""

handler = registry.handler

http_handler = registry.http
"""Register an HTTP kind in the default registry (see :meth:`Registry.http`)."""

ALERT_KIND = "payq.alert"
ALERT_QUEUE = "payq.alerts"
"""payq's own alerts (a task about to die, dead, waiting for review, a
contradicting callback) are tasks of this kind on this queue."""


def _log_line(event: str, worker_id: str, level: str = "info", **fields: Any) -> str:
    """One JSON log line shaped like the engine's own (ts, level, event,
    worker first), so log shippers index both alike."""
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return json.dumps({"ts": ts, "level": level, "event": event, "worker": worker_id, **fields}, default=str)


def _alert_default(worker_id: str, log: bool) -> HandlerFunction:
    """The ``payq.alert`` handler of a worker whose application registered
    none: it writes the alert as one JSON log line (level warning) and
    succeeds, so alerts are seen in the logs instead of piling up as
    pending tasks that make their queue look stuck."""

    def log_alert(task: TaskRun) -> Dict[str, Any]:
        if log:
            print(_log_line("alert", worker_id, "warning", task_id=task.id, alert=task.payload),
                  file=sys.stderr, flush=True)
        return {"handled_by": "payq default alert handler", "logged": log}

    return log_alert


# run() waits for the engine's stop (request_stop(), or the engine stopping
# itself after a thread failed) in slices of this length, returning to the
# interpreter in between so that Python signal handlers (SIGTERM) can run.
_RUN_WAIT_SLICE_MS = 200


def _default_worker_id() -> str:
    # "<host>:<pid>:<6 hex digits>", the core's own default (one format for
    # Python and C++ workers alike).
    return str(core.worker_id_default())


def _queue_weight(queue: Any) -> Tuple[str, int]:
    """A queue of ``Worker(queues=...)``: a name, or (name, weight)."""
    if isinstance(queue, str):
        return _args.text(queue, "queue"), 1
    if not isinstance(queue, (tuple, list)) or len(queue) != 2:
        raise InvalidArgument("each of queues is a name or a (name, weight) pair")
    return _args.text(queue[0], "queue"), _args.integer(queue[1], "queue weight", _args.INT32_MIN, _args.INT32_MAX)


class Worker:
    """Runs handlers for tasks of some queues, on C++ threads, each with its
    own connection. Use :meth:`run` (blocks; stops gracefully on SIGTERM and
    SIGINT) or :meth:`start`/:meth:`stop`. With ``log=True`` it writes one
    JSON object per event to stderr.

    With ``alerts=True`` (the default) a worker serving any queue also
    serves payq's alert queue ``payq.alerts`` (weight 1). Alerts go to the registry's
    ``payq.alert`` handler; without one, a default handler logs each alert
    as a JSON line (event ``alert``, level warning) and succeeds, and the
    worker says so once when it starts.
    """

    def __init__(
        self,
        db: Any,
        *,
        queues: Sequence[Union[str, Tuple[str, int]]] = ("default",),
        registry: Registry = registry,
        concurrency: int = 4,
        batch: int = 10,
        poll_interval: timedelta = timedelta(seconds=1),
        shutdown_grace: timedelta = timedelta(seconds=30),
        worker_id: Optional[str] = None,
        listen: bool = True,
        maintenance: bool = True,
        maintenance_interval: timedelta = timedelta(seconds=1),
        prune_after: timedelta = timedelta(days=7),
        log: bool = True,
        alerts: bool = True,
    ) -> None:
        pairs = [_queue_weight(q) for q in ([queues] if isinstance(queues, str) else queues)]
        # A worker told to serve no queue at all (maintenance only) stays so.
        if _args.flag(alerts, "alerts") and pairs and all(name != ALERT_QUEUE for name, _ in pairs):
            pairs.append((ALERT_QUEUE, 1))
        self.worker_id = _args.text(worker_id, "worker_id") if worker_id is not None else _default_worker_id()
        core_registry = registry._to_core()
        # Without an application handler, alerts are logged and succeed
        # rather than die as an unknown kind or wait forever.
        self._alert_handler_default = ALERT_KIND not in registry.kinds()
        if self._alert_handler_default:
            core_registry.add_python(ALERT_KIND, _adapter(_alert_default(self.worker_id, log)), None, None, None,
                                     False)
        self._alerts_served = any(name == ALERT_QUEUE for name, _ in pairs)
        self._log = log
        self._core = core.Worker(
            db._core, core_registry, queues=pairs,
            concurrency=_args.integer(concurrency, "concurrency", _args.INT32_MIN, _args.INT32_MAX),
            batch=_args.integer(batch, "batch", 0, _args.INT32_MAX), poll_ms=_ms(poll_interval),
            grace_ms=_ms(shutdown_grace), worker_id=self.worker_id, listen=_args.flag(listen, "listen"),
            maintenance=_args.flag(maintenance, "maintenance"), maintenance_interval_ms=_ms(maintenance_interval),
            prune_after_ms=_ms(prune_after), log=_args.flag(log, "log"),
        )
        self._shutdown_grace = shutdown_grace

    def start(self) -> None:
        """Start the worker's threads and return."""
        self._core.start()
        if self._alert_handler_default and self._log:
            handled = (f"this worker logs each alert of {ALERT_QUEUE} as a JSON line (event alert) and marks it "
                       f"succeeded" if self._alerts_served else
                       f"this worker does not serve {ALERT_QUEUE}, so alerts wait there for one that does")
            print(_log_line("alert_handler_default", self.worker_id, "warning",
                            detail=f"no {ALERT_KIND} handler is registered: {handled}; register one with "
                                   f"@payq.handler({ALERT_KIND!r}) to page someone"),
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop claiming, let in-flight tasks finish, give back the rest."""
        self._core.stop()

    def request_stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler or a handler)."""
        self._core.request_stop()

    @property
    def stop_requested(self) -> bool:
        """Whether the worker is stopping: asked to, or stopped by itself
        because one of its threads failed (then :meth:`stop` raises that
        thread's error)."""
        return bool(self._core.stop_requested())

    def stats(self) -> Dict[str, Any]:
        """The worker's counters since it was created (``claimed``,
        ``succeeded``, ``in_flight``, ...) by name; :mod:`payq.metrics`
        exports them."""
        s = self._core.stats()
        return {name: getattr(s, name) for name in dir(s) if not name.startswith("_")}

    def run(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`request_stop`), then shut
        down gracefully: stop claiming, give back claimed tasks not yet
        started, and let in-flight tasks finish within ``shutdown_grace``.
        A handler still running after the grace is abandoned: the process
        exits (status 3), the attempt's lease expires, and maintenance
        records it as ``unknown`` (retried with the same key, never
        compensated). Call from the main thread.

        If a worker thread fails (a broken invariant), the worker stops by
        itself: ``run`` shuts down the same way and then raises that
        thread's error."""
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: self.request_stop())
        try:
            self.start()
            # The engine's stop state is the one truth: a request (from a
            # signal handler, another thread or a handler) and a failed
            # engine thread both end the wait.
            while not self._core.stop_wait_for(_RUN_WAIT_SLICE_MS):
                pass
        finally:
            self._stop_within_grace()
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _stop_within_grace(self) -> None:
        """:meth:`stop` on a thread of its own, so a handler that outlives
        the grace cannot hold the process; re-raises here what ``stop``
        raised there (a failed worker thread's error)."""
        raised: List[BaseException] = []

        def stop() -> None:
            try:
                self.stop()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                raised.append(exc)

        stopper = threading.Thread(target=stop, name="payq-worker-stop", daemon=True)
        stopper.start()
        # The engine gives back unstarted tasks at once; only handlers run late.
        stopper.join(self._shutdown_grace.total_seconds() + 1.0)
        if stopper.is_alive():
            print(json.dumps({"event": "shutdown_grace_exceeded_exit", "worker": self.worker_id}),
                  file=sys.stderr, flush=True)
            os._exit(3)
        if raised:
            raise raised[0]
