"""payq's web dashboard: task lists (sorted, searched by payload field,
refreshed live), a task's attempt timeline with tracebacks and its ledger
rows, retry / cancel / release / resolve (one task or a selection) with the
operator's name and reason recorded, queues paused, resumed and limited
with a recorded reason, what each worker runs, queue depth and throughput
over time, accounts with their journals, and the ledger audit.

A WSGI application built from the standard library only:

- ``payq dashboard --port 8080`` serves it with its own token login, on
  waitress (:func:`payq.dashboard.server.run`);
- :func:`make_app` ``(db, authenticate=...)`` mounts it in a host
  application behind that application's authentication
  (``payq.contrib.django.urls``, :func:`payq.contrib.flask.mount_dashboard`).

See docs/dashboard.md.
"""

from __future__ import annotations

from payq.dashboard.app import DashboardApp, make_app
from payq.dashboard.auth import Authenticate, generate_token
from payq.dashboard.server import DashboardServer

__all__ = ["make_app", "DashboardApp", "DashboardServer", "Authenticate", "generate_token"]
