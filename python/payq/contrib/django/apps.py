"""The Django application config of payq."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.db.models.signals import post_migrate  # type: ignore[import-untyped]


class PayqConfig(AppConfig):
    """Validates ``settings.PAYQ`` at start-up; with ``AUTO_MIGRATE``,
    migrates payq's schema whenever ``manage.py migrate`` runs; closes
    payq's connections before the test runner copies or drops a test
    database."""

    name = "payq.contrib.django"
    label = "payq"
    verbose_name = "payq"
    default = True

    def ready(self) -> None:
        from payq.contrib.django.conf import payq_settings, settings_reset

        setting_changed.connect(settings_reset, dispatch_uid="payq.settings_reset")
        settings_reset()
        payq_settings()  # bad settings fail here, when the project starts
        post_migrate.connect(_migrate_after_django, sender=self, dispatch_uid="payq.migrate_after_django")
        _test_databases_release()


def _migrate_after_django(sender: AppConfig, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    # Sent after `manage.py migrate` (and the test runner's creation of a test
    # database) for every app with a models module, hence payq's empty one.
    from payq.contrib.django.conf import payq_settings
    from payq.contrib.django.db import migrate

    settings = payq_settings()
    if not settings.auto_migrate or using != settings.database:
        return
    report = migrate(using)
    if verbosity >= 1 and report.applied:
        stdout = kwargs.get("stdout") or sys.stdout
        stdout.write(f"  payq: applied migrations {report.applied} to schema {settings.schema!r}; "
                     f"now at version {report.version_current}\n")


# Marks a method of Django's that closes payq's connections first.
_CLOSES_PAYQ = "_payq_closes_connections"


def _payq_closed_first(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from payq.contrib.django.db import databases_close

        databases_close()
        return method(*args, **kwargs)

    setattr(wrapper, _CLOSES_PAYQ, True)
    return wrapper


def _test_databases_release() -> None:
    # PostgreSQL refuses to drop a database, or to copy it for a parallel
    # run, while anyone is connected to it, and payq's pool keeps a
    # connection to the test database (AUTO_MIGRATE migrated it) for the
    # process's life: `manage.py test` would fail at its teardown, and the
    # next run would find the test database still there. Django sends no
    # signal around these two steps, so payq wraps them, once.
    try:
        from django.db.backends.postgresql.creation import DatabaseCreation  # type: ignore[import-untyped]
    except ImportError:  # no PostgreSQL driver: no PostgreSQL test database either
        return
    for name in ("_destroy_test_db", "_clone_test_db"):
        method = getattr(DatabaseCreation, name, None)
        if method is not None and not getattr(method, _CLOSES_PAYQ, False):
            setattr(DatabaseCreation, name, _payq_closed_first(method))
