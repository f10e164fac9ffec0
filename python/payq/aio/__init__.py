"""payq for asyncio.

The same API as the synchronous package, awaitable::

    db = await payq.aio.connect(dsn)
    async with db.transaction() as t:
        hold = await t.ledger.hold(wallet, payq.Money("25.00", "EUR"), key=f"withdraw:{key}")
        await t.enqueue("payout", {"iban": iban}, settle=payq.Settle.capture(hold, into=clearing))

- :func:`connect`, :class:`Database`, :class:`Transaction`: payq's own
  connections, the C++ work on a bounded thread pool (:mod:`payq.aio.offload`).
- :func:`app_executor`: payq inside the application's own async transaction
  (psycopg 3, asyncpg, SQLAlchemy asyncio).
- ``@payq.handler`` on an ``async def``: run by the worker on one event
  loop per process (:mod:`payq.aio.handler_loop`).

See docs/async.md.
"""

from __future__ import annotations

from payq.aio.appconn import AppTransaction, app_executor
from payq.aio.database import Database, Transaction, connect
from payq.aio.views import Inbox, Ledger, Queues, Tasks

__all__ = ["connect", "Database", "Transaction", "app_executor", "AppTransaction", "Ledger", "Tasks", "Queues",
           "Inbox"]
