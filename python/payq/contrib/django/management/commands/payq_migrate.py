"""``manage.py payq_migrate``: apply payq's schema migrations to the
project's database (``PAYQ["DATABASE"]``, schema ``PAYQ["SCHEMA"]``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser  # type: ignore[import-untyped]

import payq
from payq.contrib.django.conf import payq_settings
from payq.contrib.django.db import database


class Command(BaseCommand):
    help = "Apply payq's missing schema migrations to the Django database (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=None,
                            help="the DATABASES alias to migrate (default: PAYQ['DATABASE'])")

    def handle(self, *args: Any, **options: Any) -> None:
        schema = payq_settings().schema
        try:
            report = database(options["database"]).migrate()
        except payq.Error as exc:
            raise CommandError(f"payq: {type(exc).__name__}: {exc}") from exc
        if report.applied:
            self.stdout.write(f"applied migrations {report.applied} to schema {schema!r}; "
                              f"now at version {report.version_current}")
        else:
            self.stdout.write(f"schema {schema!r} is up to date at version {report.version_current}")
