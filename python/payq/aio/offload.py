"""Where payq's blocking work runs for asyncio code: a bounded thread pool.

payq's core is blocking libpq code (libpqxx), so an awaitable payq call
hands the C++ work to one of a few threads and awaits it; the event loop
never blocks on the database. The pool is bounded (``threads``): a burst of
requests queues for a thread instead of starting a thread per call, and
never needs more database connections than the pool has threads plus the
transactions open at the time (each async transaction keeps its pooled
connection between its awaits, bounded by ``transactions_max``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from payq import _args
from payq.errors import InvalidState

__all__ = ["Offload", "Serial", "THREADS_DEFAULT", "THREADS_MAX"]

T = TypeVar("T")

THREADS_DEFAULT = 8
"""Threads per :class:`Offload` unless told: enough round trips in
parallel for one process; each holds a database connection while it runs."""
THREADS_MAX = 256


class Offload:
    """A bounded pool of threads for payq's blocking calls."""

    def __init__(self, threads: int = THREADS_DEFAULT, *, name: str = "payq-aio") -> None:
        self.threads = _args.integer(threads, "threads", 1, THREADS_MAX)
        self._pool: Optional[ThreadPoolExecutor] = ThreadPoolExecutor(max_workers=self.threads,
                                                                      thread_name_prefix=name)
        self._pid = os.getpid()

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on a pool thread, awaited."""
        pool = self._pool
        if pool is None:
            raise InvalidState("this payq.aio object was closed")
        if self._pid != os.getpid():
            raise InvalidState("a payq.aio object cannot cross a fork: connect again in the child process")
        loop = asyncio.get_running_loop()
        # In the caller's context (as asyncio.to_thread does): an enqueue
        # there stores the awaiting request's trace, not a new one.
        context = contextvars.copy_context()
        return await loop.run_in_executor(pool, functools.partial(context.run, function, *args, **kwargs))

    def close(self) -> None:
        """Let the threads go once their current calls end. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


class Serial:
    """Runs one object's calls one at a time, on whichever pool thread: a
    payq transaction (and the connection under it) belongs to one thread at
    a time. A call that outlives its awaiting task (a cancelled request)
    still holds the lock, so the rollback that follows waits for it instead
    of using the connection from two threads at once."""

    def __init__(self, offload: Offload) -> None:
        self.offload = offload
        self._lock = threading.Lock()

    def _locked(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return function(*args, **kwargs)

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on a pool thread, after this
        object's earlier calls."""
        return await self.offload.call(self._locked, function, *args, **kwargs)
