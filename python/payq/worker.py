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
stored as JSON is ``unknown``, never a success.

An ``async def`` handler runs on payq's handler event loop (one loop thread
per worker process, :mod:`payq.aio.handler_loop`), many tasks in flight per
worker thread, with the same outcomes, fencing and settlement; it is
cancelled when its lease runs out (``unknown``). See ``docs/async.md``.

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
from payq import keyring as _keyring
from payq import tracing as _tracing
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

    def __init__(self, task: Any, worker_id: str, lease_token: int) -> None:
        # ``task`` is a :class:`payq.Task`, or the engine's claimed task, from
        # which the Task (payload parsed, timestamps read) is built on first
        # use: a short handler that reads little should not pay for it all.
        self._task: Optional[Task] = task if isinstance(task, Task) else None
        self._core_task: Any = None if isinstance(task, Task) else task
        self.worker_id = worker_id
        self.lease_token = lease_token
        self.completed = False
        self._started = time.monotonic()
        self._keyring: Any = None  # an encrypted kind's: complete() encrypts the result

    @property
    def task(self) -> Task:
        """The task as claimed."""
        if self._task is None:
            self._task = Task._from_core(self._core_task)
        return self._task

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            # Not a task field; and never recurse while unpickling or
            # before __init__ ran.
            raise AttributeError(name)
        return getattr(self.task, name)

    def complete(self, transaction: Any, result: Any = None) -> None:
        """Record success inside ``transaction`` (a ``payq.Transaction`` or
        an application connection's executor from ``payq.app_executor``)."""
        target = getattr(transaction, "_tx", transaction)
        duration_ms = int((time.monotonic() - self._started) * 1000)
        result_json = json.dumps(result, allow_nan=False)
        if self._keyring is not None:
            result_json = core.encryption_json_seal(self._keyring._core, "result", self.task.id, self.task.kind,
                                                    result_json)
        core.outbox_complete(target, task_id=self.task.id, lease_token=self.lease_token, attempt=self.task.attempt,
                             outcome="success", result_json=result_json,
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
    encrypt: bool = False


@dataclass
class _HttpRegistration:
    kind: _http.HttpKind
    base_delay: Optional[timedelta]
    max_delay: Optional[timedelta]
    multiplier: Optional[int]
    encrypt: bool = False


def _ms(value: Optional[timedelta]) -> Optional[int]:
    return None if value is None else value // timedelta(milliseconds=1)


_ERROR_CHARS_MAX = 4000
_ASYNC_REFUSED = ("a handler is a plain function or an `async def` coroutine function; an async generator "
                  "gives no single result to await")


def _unwrapped(function: Any) -> Tuple[Any, Any]:
    """``function`` under any ``functools.partial``, and its type's ``__call__``."""
    while isinstance(function, functools.partial):
        function = function.func
    return function, getattr(type(function), "__call__", None)


def _is_async(function: Any) -> bool:
    """Whether calling ``function`` gives an async generator instead of
    running the handler (directly, through ``__call__``, or a
    ``functools.partial`` of either): refused, as nothing awaits one."""
    return any(inspect.isasyncgenfunction(f) for f in _unwrapped(function))


def _is_coroutine_function(function: Any) -> bool:
    """Whether ``function`` is an ``async def`` handler (directly, through
    ``__call__``, or a ``functools.partial`` of either): it runs on the
    handler event loop."""
    return any(inspect.iscoroutinefunction(f) for f in _unwrapped(function))


def _unstored(error: str) -> Reported:
    """The report for a result that cannot be stored: ``unknown``, because
    the handler may have acted. Never a success, whose settlement would
    capture the task's hold for a result nobody can see; ``unknown``
    settles nothing and is retried with the same idempotency key (or waits
    for an operator after the last attempt)."""
    return ("unknown", "null", error[:_ERROR_CHARS_MAX], None)


# What most handlers return, checked first: none of these is awaitable.
_PLAIN_RESULT_TYPES = (dict, list, str, int, float, bool, tuple)
_SUCCESS_WITHOUT_RESULT = ("success", "null", "", None)


def _result_report(result: Any) -> Reported:
    """The report for what a handler returned."""
    if result is None:
        return _SUCCESS_WITHOUT_RESULT
    if type(result) not in _PLAIN_RESULT_TYPES and (inspect.isawaitable(result) or inspect.isasyncgen(result)):
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


def _adapter(function: HandlerFunction,
             keyring: Optional[_keyring.Keyring] = None) -> Callable[[Any, str, int], Reported]:
    """Runs ``function`` and reports its outcome as the engine expects.
    With ``keyring`` (an encrypted kind) a result the handler records
    itself is encrypted, and an exception is logged without its message."""

    def run(core_task: Any, worker_id: str, lease_token: int) -> Reported:
        """Run ``function`` on one claimed task: ``None`` if it completed
        the task itself, else ``(outcome, result JSON, error, retry delay in
        milliseconds or None)``."""
        task = TaskRun(core_task, worker_id, lease_token)
        task._keyring = keyring
        try:
            # The handler's own spans are children of the attempt's.
            with _tracing.attempt_scope():
                result = function(task)
        except Exception as exc:  # noqa: BLE001 - any other failure means retry
            return _raised_report(task, exc, encrypted=keyring is not None)
        if task.completed:
            return None
        return _result_report(result)

    return run


def _raised_report(task: TaskRun, exc: BaseException, encrypted: bool = False) -> Reported:
    """The report for a handler (sync or async) that raised ``exc``: the
    outcome a payq signal names, else ``retry`` with the traceback. For an
    encrypted kind the log names only the exception's type: its message and
    traceback may quote the payload, and are stored encrypted."""
    if isinstance(exc, _OutcomeSignal):
        return (exc.outcome, "null", exc.reason or type(exc).__name__, _ms(exc.after))
    trace = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-_TRACEBACK_FRAMES_MAX))
    if encrypted:
        _handler_log.warning("task %d (%s), attempt %d: the handler raised %s (message and traceback stored "
                             "encrypted)", task.id, task.kind, task.attempt, type(exc).__name__)
    else:
        _handler_log.warning("task %d (%s), attempt %d: the handler raised", task.id, task.kind, task.attempt,
                             exc_info=exc)
    # PostgreSQL text holds no NUL; shown escaped, as repr() would.
    return ("retry", "null", f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS_MAX], None,
            trace.replace("\x00", "\\x00"))


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
        encrypt: bool = False,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Decorator: register the function as the handler of ``kind``, with
        an optional backoff (exponential, full jitter: a retry waits a random
        time up to ``min(max_delay, base_delay * multiplier**(attempt-1))``).

        ``batched_completion=True`` marks an idempotent kind whose tasks
        carry no settlement; its successes are counted in the worker's
        ``batched_completions``. The worker commits every kind's outcomes
        in groups (each task still fenced by its lease and atomic with its
        settlement, see docs/outbox.md), so the option no longer changes
        how they are written.

        The handler is a plain function or an ``async def`` one (or a
        callable whose ``__call__`` is async): a coroutine handler runs on
        payq's handler event loop, one per worker process, with every task
        of a claimed batch in flight at once, and is cancelled when its
        lease runs out (recorded as ``unknown``). Keep blocking calls out of
        it: they stall every task on the loop. An async generator is
        refused. A return value that cannot be stored as JSON (or an
        awaitable from a plain function) is recorded as ``unknown``, not
        success: the task's settlement does not run and the task is retried
        with the same idempotency key.

        ``encrypt=True`` stores the kind's payloads, results and errors
        encrypted (``docs/encryption.md``): the handler gets the clear
        payload, decrypted with the worker's keyring; a task it cannot
        decrypt goes to ``needs_review`` without running; enqueues of the
        kind from this process are encrypted unasked; ``async def``
        handlers included."""

        def register(function: HandlerFunction) -> HandlerFunction:
            """Register ``function`` for ``kind`` and return it unchanged;
            raises :class:`payq.InvalidArgument` if ``kind`` already has one
            or ``function`` is an async generator (nothing would await
            it for a single result)."""
            if _is_async(function):
                raise InvalidArgument(f"handler for {kind!r}: {_ASYNC_REFUSED}")
            if kind in self._handlers:
                raise InvalidArgument(f"a handler for {kind!r} is already registered")
            _args.flag(encrypt, "encrypt")
            self._handlers[kind] = _Registration(function, base_delay, max_delay, multiplier, batched_completion,
                                                 encrypt)
            if encrypt:
                _keyring._kind_register(kind)
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
        send_traceparent: bool = False,
        encrypt: bool = False,
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
        - ``send_traceparent``: send the attempt's W3C trace context
          (``traceparent``, ``tracestate``) to the provider, so its traces
          join the task's (see :mod:`payq.tracing`); off by default.
        - ``encrypt``: payloads, results and errors stored encrypted, as
          for :meth:`handler`; the templates see the clear payload.

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
            send_traceparent=send_traceparent,
        )
        self._handlers[kind] = _HttpRegistration(compiled, base_delay, max_delay, multiplier,
                                                 _args.flag(encrypt, "encrypt"))
        if encrypt:
            _keyring._kind_register(kind)
        return compiled

    def kinds(self) -> List[str]:
        """The registered task kinds (Python and HTTP), sorted."""
        return sorted(self._handlers)

    def _to_core(self, keyring: Optional[_keyring.Keyring] = None) -> "core.HandlerRegistry":
        registry = core.HandlerRegistry()
        if any(r.encrypt for r in self._handlers.values()):
            # Before the kinds are added: each encrypted one takes the keyring then.
            keyring = keyring if keyring is not None else _keyring.env_keyring_or_none()
        if keyring is not None:
            if not isinstance(keyring, _keyring.Keyring):
                raise InvalidArgument(f"keyring must be a payq.Keyring, not {type(keyring).__name__}")
            registry.keyring_set(keyring._core)
        # One client (one event-loop thread) for every HTTP kind of a worker.
        client = None
        for kind, r in self._handlers.items():
            if isinstance(r, _HttpRegistration):
                client = client or core.HttpClient()
                _http._add_to_core(registry, kind, r.kind, client, r.base_delay, r.max_delay, r.multiplier,
                                   encrypt=r.encrypt)
            elif _is_coroutine_function(r.function):
                from payq.aio.handler_loop import starter

                registry.add_python_async(kind, starter(r.function, keyring if r.encrypt else None),
                                          _ms(r.base_delay), _ms(r.max_delay), r.multiplier, r.batched_completion,
                                          encrypt=r.encrypt)
            else:
                registry.add_python(kind, _adapter(r.function, keyring if r.encrypt else None), _ms(r.base_delay),
                                    _ms(r.max_delay), r.multiplier, r.batched_completion, encrypt=r.encrypt)
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

    Kinds registered with ``encrypt=True`` decrypt their payloads and
    encrypt their results and errors with ``keyring`` (default: the
    environment's, ``PAYQ_KEYS`` or ``PAYQ_KEYS_FILE``; none at all is
    :class:`payq.KeyMissing`). See ``docs/encryption.md``.
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
        keyring: Optional[_keyring.Keyring] = None,
    ) -> None:
        pairs = [_queue_weight(q) for q in ([queues] if isinstance(queues, str) else queues)]
        # A worker told to serve no queue at all (maintenance only) stays so.
        if _args.flag(alerts, "alerts") and pairs and all(name != ALERT_QUEUE for name, _ in pairs):
            pairs.append((ALERT_QUEUE, 1))
        self.worker_id = _args.text(worker_id, "worker_id") if worker_id is not None else _default_worker_id()
        # Kinds registered with encrypt=True use `keyring` (default: the
        # environment's, PAYQ_KEYS or PAYQ_KEYS_FILE); none is KeyMissing.
        core_registry = registry._to_core(keyring)
        _tracing.auto_enable(now=True)  # a tracer provider set by now is used
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
