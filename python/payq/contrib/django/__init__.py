"""payq as a Django app: ``INSTALLED_APPS += ["payq.contrib.django"]``.

- settings: ``PAYQ = {"SCHEMA": ..., "DATABASE": ..., "QUEUES": [...], "APP": ...}``
  (see :mod:`payq.contrib.django.conf`), validated when Django starts;
- :func:`ledger`, :func:`enqueue`, :func:`enqueue_many`, :func:`tasks`,
  :func:`executor`: payq on Django's own connection, inside
  ``transaction.atomic()``, committed or rolled back with the model rows;
- :func:`database`: payq's own connections to the same database
  (:func:`databases_close` closes them; payq does so itself before Django's
  test runner copies or drops a test database);
- ``manage.py payq_migrate`` and ``manage.py payq_worker``; with
  ``AUTO_MIGRATE`` (the default) ``manage.py migrate`` also migrates payq,
  test databases included;
- ``include("payq.contrib.django.urls")``: payq's web dashboard, behind a
  staff check (:mod:`payq.contrib.django.dashboard`).

See docs/integrations.md.
"""

from __future__ import annotations

from payq.contrib.django.db import (
    database,
    databases_close,
    dsn,
    enqueue,
    enqueue_many,
    executor,
    ledger,
    migrate,
    tasks,
)

__all__ = ["database", "databases_close", "dsn", "enqueue", "enqueue_many", "executor", "ledger", "migrate", "tasks"]
