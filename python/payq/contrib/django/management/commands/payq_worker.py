"""``manage.py payq_worker``: run payq's worker with the project's handlers.

It takes the options of ``payq worker`` (one definition, in
:mod:`payq._worker_cli`); left out, the handlers come from ``PAYQ["APP"]``
(modules that register with ``@payq.handler``), the queues from
``PAYQ["QUEUES"]`` and the threads from ``PAYQ["CONCURRENCY"]``. The worker
is payq's own: C++ threads, each with its own connection; SIGTERM or SIGINT
stops claiming, gives back what has not started and lets running handlers
finish within ``--grace-s``. ``--metrics-port`` serves Prometheus metrics.

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
from payq import _worker_cli
from payq.contrib._common import handlers_wrap
from payq.contrib.django.conf import payq_settings
from payq.contrib.django.db import dsn

# Where each option falls back to when it is left out, as its help says.
SETTINGS_NAMES = {"APP": "PAYQ['APP']", "QUEUES": "PAYQ['QUEUES']", "CONCURRENCY": "PAYQ['CONCURRENCY']"}


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
        _worker_cli.argparse_add(parser, settings=SETTINGS_NAMES)

    def handle(self, *args: Any, **options: Any) -> None:
        settings = payq_settings()
        try:
            worker = _worker_cli.worker_options(options, settings={
                "APP": settings.app, "QUEUES": settings.queues, "CONCURRENCY": settings.concurrency})
        except payq.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        if not worker.modules:
            raise CommandError("no handlers: pass --app myapp.tasks or set PAYQ['APP']")
        try:
            missing = _worker_cli.app_import(worker.modules)
        except payq.ConfigError as exc:
            raise CommandError(str(exc), returncode=_worker_cli.EXIT_REFUSED) from exc
        if missing is not None:
            raise CommandError(missing, returncode=_worker_cli.EXIT_USAGE)
        handlers_wrap(worker.modules, _django_scope)

        def connect() -> payq.Database:
            return payq.connect(dsn(), schema=settings.schema, pooler=settings.pooler,
                                listen_dsn=settings.listen_dsn)

        status = _worker_cli.worker_main(connect, worker)
        if status != 0:
            raise CommandError(f"payq worker exited with status {status}", returncode=status)
