"""payq on Django's database connection.

Inside ``transaction.atomic()`` (or with ``ATOMIC_REQUESTS``), payq's ledger
and queue writes join Django's transaction: leaving the block commits the
model rows and the payq change together, an exception keeps neither::

    from django.db import transaction
    from payq.contrib.django import enqueue, ledger

    with transaction.atomic():
        order = Order.objects.create(user=user, amount=amount)
        debit = ledger().transfer(wallet, clearing, amount, key=f"order-{order.pk}")
        enqueue("payout", {"order": order.pk}, queue="payouts", idempotency_key=f"order-{order.pk}",
                settle=payq.Settle.reverse(debit))

The work runs through payq's application-connection executor
(:func:`payq.app_executor`) on ``django.db.connections[alias]``, where
``alias`` is ``PAYQ["DATABASE"]`` unless ``using=`` says otherwise. Outside
an atomic block it is refused with :class:`payq.InvalidArgument`, because
Django's autocommit would commit each of payq's statements on its own.

payq's *own* connections (migrations, the worker, :func:`database`) go to
``PAYQ["DSN"]``, or else to the database Django's settings describe.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from django.db import connections, transaction  # type: ignore[import-untyped]

import payq
from payq.appconn import AppExecutor, app_executor
from payq.contrib.django.conf import payq_settings
from payq.ledger import Ledger
from payq.outbox import EnqueueResult, Tasks, TaskRequest

__all__ = ["database", "databases_close", "dsn", "enqueue", "enqueue_many", "executor", "ledger", "migrate", "tasks"]

# The libpq connection keywords; Django's connection parameters also hold
# driver-only ones (cursor_factory, context, prepare_threshold), left out.
_LIBPQ_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "client_encoding", "options", "application_name", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword",
    "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "require_auth",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation",
    "service", "target_session_attrs", "load_balance_hosts",
})


def _alias(using: Optional[str]) -> str:
    return using if using is not None else payq_settings().database


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn(using: Optional[str] = None) -> str:
    """The libpq DSN of payq's own connections: ``PAYQ["DSN"]`` if set,
    else built from the Django connection's parameters (so under Django's
    test runner it names the test database)."""
    settings = payq_settings()
    alias = _alias(using)
    if settings.dsn is not None and alias == settings.database:
        return settings.dsn
    params = connections[alias].get_connection_params()
    parts = []
    for key, value in params.items():
        if key not in _LIBPQ_KEYWORDS or value is None or isinstance(value, bool):
            continue
        if isinstance(value, (str, int)) and str(value) != "":
            parts.append(f"{key}={_libpq_quote(str(value))}")
    return " ".join(parts)


_databases: Dict[Tuple[str, str], payq.Database] = {}
_databases_lock = threading.Lock()


def database(using: Optional[str] = None) -> payq.Database:
    """A :class:`payq.Database` on payq's own connections to the same
    database (one per DSN and schema, kept for the process). For work that
    needs no Django transaction: reads, operator actions (``.tasks``),
    queue settings (``.queues``)."""
    key = (dsn(using), payq_settings().schema)
    with _databases_lock:
        found = _databases.get(key)
        if found is None:
            settings = payq_settings()
            found = _databases[key] = payq.connect(key[0], schema=key[1], migrate=False, pooler=settings.pooler,
                                                   listen_dsn=settings.listen_dsn)
        return found


def databases_close() -> None:
    """Close payq's own connections of this process (those of
    :func:`database`, which the dashboard and the post-commit wake-ups use
    too); the next use connects again. payq calls it before Django's test
    runner copies or drops a test database, which PostgreSQL refuses while
    anyone is connected to it."""
    with _databases_lock:
        found = list(_databases.values())
        _databases.clear()
    for db in found:
        db.close()


def migrate(using: Optional[str] = None) -> payq.MigrateReport:
    """Apply payq's missing migrations to the database (idempotent; safe
    when several processes run it at once)."""
    return database(using).migrate()


def executor(using: Optional[str] = None) -> AppExecutor:
    """The executor on Django's connection, for APIs that take a
    transaction, such as ``task.complete(executor(), result)`` in a handler.
    Make a new one per atomic block."""
    return app_executor(connections[_alias(using)], schema=payq_settings().schema)


def ledger(using: Optional[str] = None) -> Ledger:
    """The ledger on Django's connection, in the current atomic block."""
    return Ledger(executor(using))


def tasks(using: Optional[str] = None) -> Tasks:
    """Task reads and operator actions on Django's connection, in the
    current atomic block."""
    return Tasks(executor(using))


def _notify(alias: str, queues: Set[str]) -> None:
    database(alias).notify(queues)


def _notify_on_commit(alias: str, queues: Set[str]) -> None:
    # Workers LISTEN for a NOTIFY that payq sends after a commit. On Django's
    # connection payq does not see the commit, so it asks Django to call back;
    # a rollback drops the callback. A failure to notify only costs latency
    # (workers also poll), so it is logged, never raised after the commit.
    if queues and payq_settings().notify:
        transaction.on_commit(partial(_notify, alias, queues), using=alias, robust=True)


def enqueue(kind: str, payload: Any = None, *, using: Optional[str] = None, **options: Any) -> EnqueueResult:
    """Enqueue a task in Django's current atomic block: if it rolls back,
    the task never existed. Options as for :meth:`payq.Transaction.enqueue`
    (``queue``, ``idempotency_key``, ``unique_key``, ``settle``, ...)."""
    alias = _alias(using)
    result = payq.outbox.enqueue(connections[alias], kind, payload, schema=payq_settings().schema, **options)
    if result.created:
        _notify_on_commit(alias, {options.get("queue", "default")})
    return result


def enqueue_many(requests: Iterable[TaskRequest], *, using: Optional[str] = None) -> List[EnqueueResult]:
    """Enqueue many tasks in one round trip, in Django's current atomic block."""
    alias = _alias(using)
    requests = list(requests)
    results = payq.outbox.enqueue_many(connections[alias], requests, schema=payq_settings().schema)
    _notify_on_commit(alias, {r.queue for r, done in zip(requests, results) if done.created})
    return results
