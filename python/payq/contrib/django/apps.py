"""The Django application config of payq."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.db.models.signals import post_migrate  # type: ignore[import-untyped]


class PayqConfig(AppConfig):
    """Validates ``settings.PAYQ`` at start-up and, with ``AUTO_MIGRATE``,
    migrates payq's schema whenever ``manage.py migrate`` runs."""

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
