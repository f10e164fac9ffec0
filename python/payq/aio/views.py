"""Awaitable views of payq's synchronous API objects (ledger, tasks,
queues, inbox).

Each view holds the synchronous object and a way to run calls off the
event loop; every public method of the synchronous class is available under
the same name, with the same arguments, checks, errors and docstring,
returning an awaitable. There is one source of truth: :class:`payq.Ledger`
and friends. A method that yields (``Ledger.iter_history``) becomes an
async iterator fetched in chunks.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, List

__all__ = ["Ledger", "Tasks", "Queues", "Inbox"]

Call = Callable[..., Awaitable[Any]]
# Items pulled from a blocking iterator per trip to a thread.
_ITER_CHUNK_COUNT_MAX = 500


async def _iterate(call: Call, iterator: Iterator[Any]) -> AsyncIterator[Any]:
    while True:
        chunk: List[Any] = await call(lambda: list(itertools.islice(iterator, _ITER_CHUNK_COUNT_MAX)))
        for item in chunk:
            yield item
        if len(chunk) < _ITER_CHUNK_COUNT_MAX:
            return


class _View:
    """Every public method of the wrapped object, awaitable."""

    def __init__(self, sync: Any, call: Call) -> None:
        self._sync = sync
        self._call = call

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        member = inspect.getattr_static(type(self._sync), name, None)
        if member is None:
            raise AttributeError(f"{type(self).__qualname__} has no attribute {name!r}")
        bound = getattr(self._sync, name)
        if not callable(bound):
            return bound
        if inspect.isgeneratorfunction(member):
            @functools.wraps(bound)
            def iterate(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                return _iterate(self._call, bound(*args, **kwargs))

            return iterate

        @functools.wraps(bound)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(bound, *args, **kwargs)

        return call

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | {n for n in dir(type(self._sync)) if not n.startswith("_")})

    def __repr__(self) -> str:
        return f"<payq.aio.{type(self).__name__} of {self._sync!r}>"


class Ledger(_View):
    """The ledger, awaitable: every method of :class:`payq.Ledger`
    (``account``, ``transfer``, ``hold``, ``capture``, ``release``,
    ``reverse``, ``history``, ``audit``, ...) under the same name and
    arguments, returning an awaitable; ``iter_history`` is an async
    iterator."""


class Tasks(_View):
    """Task reads and operator actions, awaitable: every method of
    :class:`payq.outbox.Tasks`."""


class Queues(_View):
    """Queue settings, awaitable: every method of :class:`payq.outbox.Queues`."""


class Inbox(_View):
    """Provider callbacks, awaitable: every method of :class:`payq.inbox.Inbox`."""
