"""``manage.py payq_worker``: run payq's worker with the project's handlers.

The handlers come from ``--app`` or ``PAYQ["APP"]`` (modules that register
with ``@payq.handler``), the queues from ``--queues`` or ``PAYQ["QUEUES"]``.
The worker is payq's own (``payq worker``): C++ threads, each with its own
connection; SIGTERM or SIGINT stops claiming, gives back what has not
started and lets running handlers finish within ``--grace-s``.

Each handler call runs between two ``close_old_connections()``, as a Django
request does, so a handler's Django connection that broke or outlived
``CONN_MAX_AGE`` is replaced rather than failing every later task.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from django.core.management.base import BaseCommand, CommandError, CommandParser  # type: ignore[import-untyped]
from django.db import close_old_connections  # type: ignore[import-untyped]

import payq
from payq import cli
from payq.contrib._common import handlers_wrap, modules_check, queues_parse, worker_argv
from payq.contrib.django.conf import CONCURRENCY_MAX, payq_settings
from payq.contrib.django.db import dsn


@contextmanager
def _django_scope() -> Iterator[None]:
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


class Command(BaseCommand):
    help = "Run payq's worker for the handlers of PAYQ['APP'] on PAYQ['QUEUES'] (SIGTERM: graceful stop)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app", action="append", default=None,
                            help="module registering handlers with @payq.handler (repeatable; default PAYQ['APP'])")
        parser.add_argument("--queues", default=None,
                            help="comma-separated queues, each optionally name:weight (default PAYQ['QUEUES'])")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="threads, one connection each (default PAYQ['CONCURRENCY'])")
        parser.add_argument("--batch", type=int, default=None, help="tasks claimed at a time per thread")
        parser.add_argument("--poll-ms", type=int, default=None, help="poll interval when no NOTIFY arrives")
        parser.add_argument("--grace-s", type=int, default=None, help="shutdown grace for running handlers")
        parser.add_argument("--no-maintenance", action="store_true", help="do not take part in maintenance")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = payq_settings()
        try:
            modules = modules_check(options["app"], "--app") if options["app"] else settings.app
            queues = queues_parse(options["queues"], "--queues") if options["queues"] else settings.queues
        except payq.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        if not modules:
            raise CommandError("no handlers: pass --app myapp.tasks or set PAYQ['APP']")
        concurrency = options["concurrency"] if options["concurrency"] is not None else settings.concurrency
        if not 1 <= concurrency <= CONCURRENCY_MAX:
            raise CommandError(f"--concurrency must be 1..{CONCURRENCY_MAX}, not {concurrency}")
        handlers_wrap(modules, _django_scope)
        argv = worker_argv(dsn=dsn(), schema=settings.schema, modules=modules, queues=queues,
                           concurrency=concurrency, batch=options["batch"], poll_ms=options["poll_ms"],
                           grace_s=options["grace_s"], maintenance=not options["no_maintenance"])
        status = cli.main(argv)
        if status != 0:
            raise CommandError(f"payq worker exited with status {status}", returncode=status)
