"""The event loop async handlers run on: one per worker process.

``@payq.handler`` on an ``async def`` registers a C++ handler
(``bindings/bind_async_handler.cpp``) whose asynchronous entry point calls
:func:`starter`'s function on a worker thread. That function only schedules
the coroutine on this loop and returns, so a worker thread keeps every task
of its claimed batch in flight at once (``Worker(batch=...)`` tasks per
thread, ``concurrency`` threads). When the coroutine finishes, its report,
the same one a synchronous handler produces, is handed back to the engine,
which records it with the same fenced completion and settlement.

The coroutine is cancelled when its task's lease runs out (the task's
``timeout``, counted from the start of the attempt) and the attempt is then
``unknown``: it may have acted, so it is retried with the same idempotency
key and never compensated.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import os
import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional, Set

from payq import tracing as _tracing
from payq.errors import InvalidState

__all__ = ["HandlerLoop", "handler_loop", "starter"]

_log = logging.getLogger("payq.worker")
# How long the first task waits for a new loop thread to be running.
_LOOP_START_WAIT_S = 10.0


class HandlerLoop:
    """An asyncio event loop on a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        # Strong references to the running attempts: the loop itself keeps
        # only weak ones, and a collected task would never report.
        self.attempts: Set["asyncio.Future[Any]"] = set()
        self.in_flight_max = 0
        # Callbacks from worker threads, run by one wake-up of the loop: a
        # worker thread starts a whole claimed batch in a row, and one
        # wake-up (a write to the loop's self-pipe, a thread switch) per
        # batch costs far less than one per task.
        self._pending: "collections.deque[Callable[[], None]]" = collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="payq-async-handlers", daemon=True)
        self.thread.start()
        if not started.wait(_LOOP_START_WAIT_S):
            raise InvalidState("payq's async handler loop did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def submit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread soon; safe from any thread."""
        self._pending.append(callback)
        with self._wake_lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Reset first: a callback appended from now on schedules a wake-up
        # of its own, and every one appended before is run below.
        with self._wake_lock:
            self._wake_scheduled = False
        for _ in range(len(self._pending)):
            callback = self._pending.popleft()
            try:
                callback()
            except Exception:  # noqa: BLE001 - one failed start must not strand the others
                _log.exception("payq's async handler loop: a task could not be started")

    def run(self, awaitable: Any) -> "Future[Any]":
        """Run a coroutine on the loop from another thread (tests, tools)."""
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop)


_shared: Optional[HandlerLoop] = None
_shared_lock = threading.Lock()


def handler_loop() -> HandlerLoop:
    """This process's handler loop, started on first use (and again in a
    forked child, where the parent's loop thread does not exist)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid() or not _shared.thread.is_alive():
            _shared = HandlerLoop()
        return _shared


Report = Any  # payq.worker.Reported
Deliver = Callable[[Report], None]


def _report_of(attempt: "asyncio.Future[Any]", task: Any, lease_ms: Optional[int], encrypted: bool = False) -> Report:
    """What a finished coroutine reports: as a synchronous handler's
    outcome, or ``unknown`` when it was cancelled (it may have acted)."""
    from payq.worker import _raised_report, _result_report, _unstored

    if attempt.cancelled():
        if lease_ms is not None:
            return _unstored(f"cancelled: the task's lease of {lease_ms} ms ran out before the handler finished")
        return _unstored("cancelled before the handler finished")
    error = attempt.exception()
    if error is not None:
        return _raised_report(task, error, encrypted=encrypted)
    if task.completed:
        return None
    return _result_report(attempt.result())


def _start(function: Callable[[Any], Any], task: Any, lease_ms: int, deliver: Deliver, loop: HandlerLoop,
           context: Optional[contextvars.Context] = None) -> None:
    """On the loop thread: start the coroutine (in ``context``, when given:
    the attempt's trace), its lease timer, and the report when it ends."""
    lease_ran_out = False
    try:
        attempt: "asyncio.Future[Any]" = (asyncio.ensure_future(function(task)) if context is None
                                          else context.run(lambda: asyncio.ensure_future(function(task))))
    except Exception as exc:  # noqa: BLE001 - calling the function raised before any await
        from payq.worker import _raised_report

        deliver(_raised_report(task, exc, encrypted=task._keyring is not None))
        return

    def expire() -> None:
        nonlocal lease_ran_out
        if not attempt.done():
            lease_ran_out = True
            attempt.cancel()

    timer = loop.loop.call_later(lease_ms / 1000.0, expire)
    loop.attempts.add(attempt)
    loop.in_flight_max = max(loop.in_flight_max, len(loop.attempts))

    def finished(done: "asyncio.Future[Any]") -> None:
        timer.cancel()
        loop.attempts.discard(done)
        try:
            report = _report_of(done, task, lease_ms if lease_ran_out else None, encrypted=task._keyring is not None)
        except Exception as exc:  # noqa: BLE001 - the engine must hear of every attempt
            from payq.worker import _unstored

            report = _unstored(f"the handler's outcome could not be reported: {type(exc).__name__}: {exc}")
        deliver(report)

    attempt.add_done_callback(finished)


def starter(function: Callable[[Any], Any], keyring: Any = None) -> Callable[[Any, str, int, Deliver], None]:
    """The entry point the C++ async handler calls (on a worker thread, with
    the GIL) for each task of ``function``'s kind: it schedules the
    coroutine on the handler loop and returns at once. With ``keyring`` (an
    encrypted kind, already decrypted by the engine) a result the handler
    records itself is encrypted and an exception is logged by type only."""

    def start(core_task: Any, worker_id: str, lease_token: int, deliver: Deliver) -> None:
        from payq.worker import TaskRun

        task = TaskRun(core_task, worker_id, lease_token)
        task._keyring = keyring
        lease_ms = int(core_task.timeout_ms)
        loop = handler_loop()
        context = _tracing.attempt_context()  # the attempt's span, current here, for the coroutine's spans
        loop.submit(lambda: _start(function, task, lease_ms, deliver, loop, context))

    return start
