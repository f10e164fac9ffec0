"""payq as a Flask extension.

::

    from flask import Flask
    from payq.contrib.flask import Payq

    payq_ext = Payq()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["PAYQ_DSN"] = "host=db.internal dbname=shop user=shop"
        payq_ext.init_app(app)
        return app

Configuration (all optional):

``PAYQ_DSN``
    libpq connection string of payq's database; ``None`` (the default)
    means the ``PAYQ_DSN`` environment variable, else payq's embedded server.
``PAYQ_POOLER``, ``PAYQ_LISTEN_DSN``
    ``"transaction"`` behind a transaction-mode pooler such as pgbouncer,
    and a direct DSN for the workers' LISTEN (see :func:`payq.connect`).
``PAYQ_SCHEMA``
    the schema of payq's tables (default ``"payq"``).
``PAYQ_HANDLERS``
    ``flask payq worker``: module(s) that register handlers with
    ``@payq.handler`` (when ``--app`` is not given).
``PAYQ_QUEUES``
    ``flask payq worker``: ``["payouts", "sms:2"]`` (default ``["default"]``).
``PAYQ_CONCURRENCY``
    ``flask payq worker``: threads (default 4).

Three ways to write, each a single transaction:

- ``payq_ext.request_transaction``: one payq transaction for the current
  request, begun on first use, **committed when the view returns a response
  with a status below 400** (before the response is sent, so a failed
  commit becomes a 500) and rolled back when the view raises or answers
  4xx/5xx;
- ``with payq_ext.transaction() as t:``: an explicit transaction on payq's
  own connection, in or out of a request;
- ``payq_ext.on(session)``: the ledger and the queue on the application's
  SQLAlchemy ``Session`` or ``Connection`` (Flask-SQLAlchemy's
  ``db.session`` too), committed with the application's own rows by
  ``session.commit()``.

``flask payq migrate`` applies payq's migrations; ``flask payq worker`` runs
payq's worker with the application's handlers, each call inside an
application context, and takes the options of ``payq worker``
(:mod:`payq._worker_cli`; ``--handlers`` is another spelling of its
``--app``). A handler completes its task with the application's rows by
``task.complete(payq_ext.on(session).executor, result)`` inside the
session's transaction. :func:`mount_dashboard` serves payq's web dashboard
under a prefix, behind the application's own authentication.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import click
from flask import Flask, Response, current_app, g, has_app_context, has_request_context
from flask.cli import AppGroup

import payq
from payq import _worker_cli
from payq.appconn import AppExecutor, app_executor
from payq.contrib._common import QueueSpec, handlers_wrap, modules_check, queues_parse, schema_check
from payq.errors import ConfigError, Error, InvalidArgument
from payq.ledger import Ledger
from payq.outbox import EnqueueResult, Tasks, TaskRequest

__all__ = ["Payq", "AppConnection", "payq_cli", "mount_dashboard"]

EXTENSION_KEY = "payq"
CONCURRENCY_MAX = 256
_G_TRANSACTION = "_payq_request_transaction"
_SESSION_NOTIFY = "payq_notify_queues"


@dataclass
class _State:
    """One Flask application's payq configuration and its database."""

    dsn: Optional[str]
    schema: str
    handlers: Tuple[str, ...]
    queues: Tuple[QueueSpec, ...]
    concurrency: int
    pooler: Optional[str] = None
    listen_dsn: Optional[str] = None
    _database: Optional[payq.Database] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def database(self) -> payq.Database:
        """The application's :class:`payq.Database`, connected on first use."""
        # Connected on first use, not in init_app: `flask --help` and
        # `flask routes` must work without a database.
        with self._lock:
            if self._database is None:
                self._database = payq.connect(self.dsn, schema=self.schema, pooler=self.pooler,
                                              listen_dsn=self.listen_dsn)
            return self._database


def _state_from_config(config: Any) -> _State:
    dsn = config.get("PAYQ_DSN")
    if dsn is not None and (not isinstance(dsn, str) or not dsn.strip()):
        raise ConfigError(f"PAYQ_DSN must be a libpq connection string or None, not {dsn!r}")
    schema = schema_check(config.get("PAYQ_SCHEMA", "payq"), "PAYQ_SCHEMA")
    handlers = modules_check(config.get("PAYQ_HANDLERS", ()), "PAYQ_HANDLERS")
    queues = queues_parse(config.get("PAYQ_QUEUES", ["default"]), "PAYQ_QUEUES")
    concurrency = config.get("PAYQ_CONCURRENCY", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= CONCURRENCY_MAX:
        raise ConfigError(f"PAYQ_CONCURRENCY must be an int from 1 to {CONCURRENCY_MAX}, not {concurrency!r}")
    pooler = config.get("PAYQ_POOLER")
    if pooler is not None and pooler not in ("none", "session", "transaction"):
        raise ConfigError(f"PAYQ_POOLER must be 'transaction', 'session', 'none' or None, not {pooler!r}")
    listen_dsn = config.get("PAYQ_LISTEN_DSN")
    if listen_dsn is not None and (not isinstance(listen_dsn, str) or not listen_dsn.strip()):
        raise ConfigError(f"PAYQ_LISTEN_DSN must be a libpq connection string or None, not {listen_dsn!r}")
    return _State(dsn, schema, handlers, queues, concurrency, pooler, listen_dsn)


def _state(app: Optional[Flask] = None) -> _State:
    target = app if app is not None else current_app
    try:
        return target.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise InvalidArgument("payq is not initialised on this Flask app: call Payq(app) or init_app(app)") from None


def _sqlalchemy_session_types() -> Tuple[type, ...]:
    try:
        from sqlalchemy.orm import Session, scoped_session
    except ImportError:
        return ()
    return (Session, scoped_session)


class AppConnection:
    """payq on an application's connection (an SQLAlchemy ``Session`` or
    ``Connection``, a psycopg connection): every operation joins the
    application's current transaction, which the application commits.

    On an SQLAlchemy ``Session``, workers are woken when the session
    commits; elsewhere they find the tasks at their next poll.
    """

    def __init__(self, connection: Any, database: payq.Database) -> None:
        self._connection = connection
        self._database = database
        self.executor: AppExecutor = app_executor(connection, schema=database.schema)
        """The executor, for APIs that take a transaction (``task.complete``)."""

    @property
    def ledger(self) -> Ledger:
        """The ledger in the application's transaction."""
        return Ledger(self.executor)

    @property
    def tasks(self) -> Tasks:
        """Task reads and operator actions in the application's transaction."""
        return Tasks(self.executor)

    def enqueue(self, kind: str, payload: Any = None, **options: Any) -> EnqueueResult:
        """Enqueue a task in the application's transaction (options as for
        :meth:`payq.Transaction.enqueue`)."""
        result = payq.outbox.enqueue(self._connection, kind, payload, schema=self._database.schema, **options)
        if result.created:
            self._notify_after_commit({options.get("queue", "default")})
        return result

    def enqueue_many(self, requests: Iterable[TaskRequest]) -> List[EnqueueResult]:
        """Enqueue many tasks in one round trip, in the application's transaction."""
        requests = list(requests)
        results = payq.outbox.enqueue_many(self._connection, requests, schema=self._database.schema)
        self._notify_after_commit({r.queue for r, done in zip(requests, results) if done.created})
        return results

    def _notify_after_commit(self, queues: Set[str]) -> None:
        session_types = _sqlalchemy_session_types()
        if not queues or not session_types or not isinstance(self._connection, session_types):
            return
        from sqlalchemy import event

        session: Any = self._connection
        pending: Optional[Set[str]] = session.info.get(_SESSION_NOTIFY)
        if pending is None:
            # One listener per session until its next commit; a rolled-back
            # transaction leaves only a harmless extra wake-up behind.
            pending = session.info[_SESSION_NOTIFY] = set()
            database = self._database

            def committed(committed_session: Any) -> None:
                """Wake the workers of the queues enqueued to before this commit."""
                queues_now = committed_session.info.pop(_SESSION_NOTIFY, set())
                if not queues_now:
                    return
                try:
                    database.notify(queues_now)
                except Error:
                    # The commit stands; workers find the tasks at their next
                    # poll. A failed wake-up must not look like a failed commit.
                    pass

            event.listen(session, "after_commit", committed, once=True)
        pending.update(queues)


class Payq:
    """The Flask extension: ``Payq(app)`` or ``Payq()`` then
    ``init_app(app)``. One instance serves any number of applications; its
    properties refer to the current one (``flask.current_app``)."""

    def __init__(self, app: Optional[Flask] = None) -> None:
        self._app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check ``app.config`` (raises :class:`payq.ConfigError`),
        end request transactions with the request, add ``flask payq``."""
        app.extensions[EXTENSION_KEY] = _state_from_config(app.config)
        app.after_request(_request_end)
        app.teardown_request(_request_teardown)
        app.cli.add_command(payq_cli)

    def _current(self) -> _State:
        if not has_app_context() and self._app is not None:
            return _state(self._app)
        return _state()

    @property
    def database(self) -> payq.Database:
        """payq's own connections for the current application."""
        return self._current().database()

    @property
    def schema(self) -> str:
        """The schema of payq's tables for the current application (``PAYQ_SCHEMA``)."""
        return self._current().schema

    def transaction(self) -> payq.Transaction:
        """``with payq_ext.transaction() as t:``: a transaction of its own,
        committed when the block ends, rolled back if it raises."""
        return self.database.transaction()

    @property
    def request_transaction(self) -> payq.Transaction:
        """The current request's transaction, begun on first use: committed
        after the view if its response status is below 400, rolled back if
        the view raises or answers 4xx/5xx."""
        if not has_request_context():
            raise InvalidArgument("payq_ext.request_transaction is only available while handling a request; "
                                  "use `with payq_ext.transaction() as t:` elsewhere")
        found: Optional[payq.Transaction] = g.get(_G_TRANSACTION)
        if found is None or not found.is_open:
            found = self.database.transaction()
            setattr(g, _G_TRANSACTION, found)
        return found

    def on(self, connection: Any) -> AppConnection:
        """payq on the application's connection (an SQLAlchemy ``Session``
        or ``Connection``, ``db.session`` of Flask-SQLAlchemy, a psycopg
        connection), in its current transaction."""
        return AppConnection(connection, self.database)


def _request_end(response: Response) -> Response:
    transaction: Optional[payq.Transaction] = g.pop(_G_TRANSACTION, None)
    if transaction is not None and transaction.is_open:
        if response.status_code < 400:
            transaction.commit()  # before the response leaves: a failed commit is a 500
        else:
            transaction.rollback()
    return response


def _request_teardown(exc: Optional[BaseException]) -> None:
    # The view raised past every handler, or an after_request function failed
    # before ours ran: nothing of the request's payq work may stay.
    transaction: Optional[payq.Transaction] = g.pop(_G_TRANSACTION, None)
    if transaction is not None and transaction.is_open:
        transaction.rollback()


# ---------------------------------------------------------------- the dashboard


def mount_dashboard(app: Flask, prefix: str, *, authenticate: Callable[[], Optional[str]]) -> None:
    """Serve payq's web dashboard (:mod:`payq.dashboard`) under ``prefix``
    (``"/ops/payq"``) of ``app``, on the database of ``Payq.init_app``.

    ``authenticate`` runs inside a request context of ``app`` (``session``,
    ``flask_login.current_user`` work) and returns the operator's name, or
    None to refuse (403); actions are recorded as ``flask:<name>``. CSRF
    tokens are keyed by ``app.secret_key`` when it is set (else valid in
    this process only).
    """
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from payq.dashboard import DashboardApp, make_app

    state = _state(app)
    prefix = "/" + prefix.strip("/")
    built: Dict[str, DashboardApp] = {}
    lock = threading.Lock()

    def actor(environ: Dict[str, Any]) -> Optional[str]:
        """Run ``authenticate`` for this request: ``"flask:<name>"``, or None to refuse."""
        with app.request_context(environ):
            name = authenticate()
        return f"flask:{name}" if name else None

    def dashboard(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The dashboard as a WSGI application, built on its first request."""
        # Built on first use: init_app must not need the database.
        with lock:
            if "app" not in built:
                key = app.secret_key
                secret = hashlib.sha256(b"payq.contrib.flask.dashboard|" + (
                    key if isinstance(key, bytes) else str(key).encode())).digest() if key else None
                built["app"] = make_app(state.database(), authenticate=actor, secret=secret)
        return built["app"](environ, start_response)

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {prefix: dashboard})  # type: ignore[method-assign]


# ---------------------------------------------------------------- flask payq ...

payq_cli = AppGroup("payq", help="payq: schema migrations and the worker.")


@payq_cli.command("migrate")
def _cli_migrate() -> None:
    """Apply payq's missing schema migrations (idempotent)."""
    state = _state()
    try:
        report = payq.connect(state.dsn, schema=state.schema, migrate=False, pooler=state.pooler,
                              listen_dsn=state.listen_dsn).migrate()
    except payq.Error as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    if report.applied:
        click.echo(f"applied migrations {report.applied} to schema {state.schema!r}; "
                   f"now at version {report.version_current}")
    else:
        click.echo(f"schema {state.schema!r} is up to date at version {report.version_current}")


# Where each option falls back to when it is left out, as its help says.
_SETTINGS_NAMES = {"APP": "PAYQ_HANDLERS", "QUEUES": "PAYQ_QUEUES", "CONCURRENCY": "PAYQ_CONCURRENCY"}


# The options of `payq worker` (payq/_worker_cli.py); `--handlers` is the
# older spelling of `--app`, kept working.
@payq_cli.command("worker", params=_worker_cli.click_params(_SETTINGS_NAMES, aliases={"app": ["--handlers"]}))
def _cli_worker(**values: Any) -> None:
    """Run payq's worker for the application's handlers (SIGTERM: graceful stop)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _state(app)
    try:
        options = _worker_cli.worker_options(values, settings={
            "APP": state.handlers, "QUEUES": state.queues, "CONCURRENCY": state.concurrency})
        if not options.modules:
            raise click.UsageError("no handlers: pass --app myapp.tasks or set PAYQ_HANDLERS")
        missing = _worker_cli.app_import(options.modules)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if missing is not None:
        raise click.UsageError(missing)
    # Handlers run on the worker's threads, where Flask has no context.
    handlers_wrap(options.modules, app.app_context)
    status = _worker_cli.worker_main(state.database, options)
    if status != 0:
        raise click.exceptions.Exit(status)
