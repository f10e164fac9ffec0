"""payq as a Django app (python/payq/contrib/django/): settings validated at
start-up, ledger and enqueue inside ``transaction.atomic()`` on Django's own
connection, ``payq_migrate``, ``payq_worker`` as operators run it (with
``--metrics-port``), ``manage.py test`` run twice on a throwaway cluster, the
dashboard mount and its login redirect, and the example project
(examples/django_project/) end to end.

Django is configured once per process (tests_py/appconn_support.py); each
test installs the payq app and its ``PAYQ`` settings with
``override_settings``, on the fresh schema of ``payq_db``. What the example
project and the worker do is checked from outside, through payq's own
connection, in subprocesses with settings of their own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

pytest.importorskip("django")
psycopg = pytest.importorskip("psycopg")

import payq  # noqa: E402
from payq import Account, Money  # noqa: E402
from payq.testing import wait_until as payq_wait_until  # noqa: E402

from appconn_support import conninfo, django_order_model  # noqa: E402,F401 (fixture)

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from payq.contrib.django import database, enqueue, enqueue_many, ledger, tasks  # noqa: E402
from payq.contrib.django.conf import PayqSettings, payq_settings, settings_parse  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "django_project"
WAIT_S_MAX = 60.0
POLL_S = 0.05
T = TypeVar("T")

DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop"}}


def wait_until(condition: Callable[[], T], what: str, diagnostics: Callable[[], str] = lambda: "") -> T:
    return payq_wait_until(condition, WAIT_S_MAX, interval_s=POLL_S, what=what, diagnostics=diagnostics)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def payq_app(django_order_model: Any, payq_db: payq.Database) -> Iterator[Any]:
    """The payq app installed, on the test's schema; yields the Order model
    (its table lives for the module)."""
    with override_settings(INSTALLED_APPS=["payq.contrib.django"],
                           PAYQ={"SCHEMA": payq_db.schema, "QUEUES": ["payouts"]}):
        yield django_order_model
    django_order_model.objects.all().delete()


@pytest.fixture
def accounts(payq_db: payq.Database) -> Tuple[Account, Account]:
    """alice with 100.00 CNY and the provider's clearing account, committed
    through payq's own connection."""
    world = payq_db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = payq_db.ledger.account("user:alice", "CNY")
    clearing = payq_db.ledger.account("provider", "CNY", "system")
    payq_db.ledger.transfer(world, alice, "100.00", key="fund-alice")
    return alice, clearing


def committed_orders(db: payq.Database, model: Any) -> List[Optional[str]]:
    """The Order rows another connection sees: only committed ones."""
    with db.transaction() as t:
        return [row[0] for row in t.execute(f"SELECT v FROM public.{model._meta.db_table} ORDER BY v")]


# ---------------------------------------------------------------- settings


def test_settings_default_to_the_default_database_and_schema_payq() -> None:
    assert settings_parse(None, DATABASES) == PayqSettings()
    assert settings_parse({}, DATABASES).schema == "payq"


def test_settings_are_read_into_typed_values() -> None:
    parsed = settings_parse({"SCHEMA": "shop_payq", "DATABASE": "default", "QUEUES": ["payouts:3", ("sms", 2), "mail"],
                             "APP": "shop.tasks", "CONCURRENCY": 8, "NOTIFY": False}, DATABASES)
    assert parsed.schema == "shop_payq"
    assert parsed.queues == (("payouts", 3), ("sms", 2), ("mail", 1))
    assert parsed.app == ("shop.tasks",)
    assert parsed.concurrency == 8 and parsed.notify is False and parsed.auto_migrate is True


@pytest.mark.parametrize("raw, message", [
    (["SCHEMA", "payq"], "must be a dict"),
    ({"SCEHMA": "payq"}, "unknown key(s) ['SCEHMA']"),
    ({"SCHEMA": "Shop-Payq"}, "settings.PAYQ['SCHEMA'] must be a PostgreSQL schema name"),
    ({"SCHEMA": "pg_payq"}, "settings.PAYQ['SCHEMA']"),
    ({"SCHEMA": 7}, "settings.PAYQ['SCHEMA']"),
    ({"DATABASE": "payments"}, "settings.PAYQ['DATABASE'] must name an entry of settings.DATABASES"),
    ({"DATABASE": "legacy"}, "is not PostgreSQL"),
    ({"DSN": ""}, "settings.PAYQ['DSN']"),
    ({"QUEUES": []}, "names no queue"),
    ({"QUEUES": 3}, "is a list of queue names"),
    ({"QUEUES": ["payouts:fast"]}, "not a whole number"),
    ({"QUEUES": ["payouts", "payouts:2"]}, "names a queue twice"),
    ({"QUEUES": [("payouts", 0)]}, "must be 1..1000"),
    ({"APP": "shop tasks"}, "not a dotted module name"),
    ({"APP": ["shop.tasks", 3]}, "settings.PAYQ['APP']"),
    ({"CONCURRENCY": 0}, "settings.PAYQ['CONCURRENCY'] must be an int from 1"),
    ({"CONCURRENCY": True}, "settings.PAYQ['CONCURRENCY']"),
    ({"NOTIFY": "yes"}, "settings.PAYQ['NOTIFY'] must be True or False"),
    ({"DASHBOARD_PERMISSION": 42}, "settings.PAYQ['DASHBOARD_PERMISSION']"),
])
def test_bad_settings_are_improperly_configured(raw: Any, message: str) -> None:
    databases = {**DATABASES, "legacy": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.db"}}
    with pytest.raises(ImproperlyConfigured) as caught:
        settings_parse(raw, databases)
    assert message in str(caught.value)


def test_settings_are_read_once_and_reread_when_a_test_overrides_them(payq_app: Any, payq_db: payq.Database) -> None:
    first = payq_settings()
    assert first is payq_settings() and first.schema == payq_db.schema
    with override_settings(PAYQ={"SCHEMA": "other_schema"}):
        assert payq_settings().schema == "other_schema"
    with override_settings(PAYQ={"QUEUES": "payouts,,"}):
        with pytest.raises(ImproperlyConfigured, match="no usable queue name"):
            payq_settings()
    assert payq_settings().schema == payq_db.schema


def test_bad_settings_stop_the_project_at_start_up(payq_dsn: str) -> None:
    params = conninfo(payq_dsn)
    script = textwrap.dedent(f"""
        import django
        from django.conf import settings
        settings.configure(
            DATABASES={{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": {params["dbname"]!r}}}}},
            INSTALLED_APPS=["payq.contrib.django"], PAYQ={{"SCHEMA": "Payments"}})
        django.setup()
        print("started")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "started" not in result.stdout
    assert "ImproperlyConfigured: settings.PAYQ['SCHEMA'] must be a PostgreSQL schema name" in result.stderr


# ---------------------------------------------------------------- Django's transaction


def test_commit_keeps_the_order_the_debit_and_the_task(payq_app: Any, payq_db: payq.Database,
                                                      accounts: Tuple[Account, Account]) -> None:
    alice, clearing = accounts
    with transaction.atomic():
        payq_app.objects.create(v="order-1")
        debit = ledger().transfer(alice, clearing, "12.34", key="order-1/debit")
        queued = enqueue("payout", {"order": "order-1"}, queue="payouts", idempotency_key="order-1",
                         settle=payq.Settle.reverse(debit))
        # In Django's open transaction: seen on its connection, by no one else.
        assert ledger().get_account(alice).balance == cny("87.66")
        assert tasks().get(queued.task_id).state == "pending"
        assert payq_db.ledger.find_transaction("order-1/debit") is None
        assert committed_orders(payq_db, payq_app) == []
    assert committed_orders(payq_db, payq_app) == ["order-1"]
    assert payq_db.ledger.get_account(alice).balance == cny("87.66")
    assert payq_db.ledger.get_account(clearing).balance == cny("12.34")
    task = payq_db.tasks.get(queued.task_id)
    assert (task.kind, task.queue, task.payload, task.idempotency_key, task.state) == (
        "payout", "payouts", {"order": "order-1"}, "order-1", "pending")
    assert payq_db.ledger.audit().ok


def test_rollback_keeps_neither_and_frees_the_key(payq_app: Any, payq_db: payq.Database,
                                                 accounts: Tuple[Account, Account]) -> None:
    alice, clearing = accounts
    with pytest.raises(RuntimeError, match="after the debit"):
        with transaction.atomic():
            payq_app.objects.create(v="order-1")
            ledger().transfer(alice, clearing, "12.34", key="order-1/debit")
            enqueue("payout", {"order": "order-1"}, queue="payouts", unique_key="order-1")
            raise RuntimeError("the view failed after the debit")
    assert committed_orders(payq_db, payq_app) == []
    assert payq_db.ledger.find_transaction("order-1/debit") is None
    assert payq_db.ledger.get_account(alice).balance == cny("100.00")
    assert payq_db.tasks.stats() == {}

    with transaction.atomic():
        payq_app.objects.create(v="order-1")
        again = ledger().transfer(alice, clearing, "12.34", key="order-1/debit")
        created = enqueue("payout", {"order": "order-1"}, queue="payouts", unique_key="order-1")
    assert not again.replayed and created.created
    assert committed_orders(payq_db, payq_app) == ["order-1"]
    assert payq_db.tasks.stats() == {"payouts": {"pending": 1}}
    assert payq_db.tasks.get(created.task_id).unique_key == "order-1"


def test_a_refused_debit_in_an_inner_atomic_leaves_the_outer_work(payq_app: Any, payq_db: payq.Database,
                                                                 accounts: Tuple[Account, Account]) -> None:
    alice, clearing = accounts
    with transaction.atomic():
        payq_app.objects.create(v="order-1")
        ledger().transfer(alice, clearing, "30.00", key="order-1/debit")
        with pytest.raises(payq.InsufficientFunds):
            with transaction.atomic():  # a savepoint
                payq_app.objects.create(v="order-2")
                ledger().transfer(alice, clearing, "99.00", key="order-2/debit")
    assert committed_orders(payq_db, payq_app) == ["order-1"]
    assert payq_db.ledger.get_account(alice).balance == cny("70.00")
    assert payq_db.ledger.find_transaction("order-2/debit") is None


def test_payq_outside_atomic_is_refused(payq_app: Any, accounts: Tuple[Account, Account]) -> None:
    alice, clearing = accounts
    with pytest.raises(payq.InvalidArgument, match="transaction.atomic"):
        ledger().transfer(alice, clearing, "1.00", key="no-atomic")
    with pytest.raises(payq.InvalidArgument, match="transaction.atomic"):
        enqueue("payout", {})


def test_enqueue_many_commits_with_the_block(payq_app: Any, payq_db: payq.Database) -> None:
    with transaction.atomic():
        results = enqueue_many([payq.TaskRequest("sms.send", {"n": n}, queue="sms") for n in range(3)])
    assert [r.created for r in results] == [True, True, True]
    assert [payq_db.tasks.get(r.task_id).payload for r in results] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert payq_db.tasks.stats() == {"sms": {"pending": 3}}


def test_workers_are_woken_after_commit_and_not_after_rollback(payq_app: Any, payq_db: payq.Database,
                                                              payq_dsn: str) -> None:
    channel = f"payq_{payq_db.schema}"
    with psycopg.connect(payq_dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                enqueue("payout", {}, queue="rolled-back")
                raise RuntimeError("rollback")
        with transaction.atomic():
            enqueue("payout", {}, queue="payouts")
        # Notifications arrive in the order they were sent: one for the
        # rolled-back queue would come first.
        received = next(listener.notifies(timeout=WAIT_S_MAX, stop_after=1), None)
    assert received is not None and (received.channel, received.payload) == (channel, "payouts")


def test_no_wake_up_when_notify_is_off(payq_app: Any, payq_db: payq.Database, payq_dsn: str) -> None:
    channel = f"payq_{payq_db.schema}"
    with psycopg.connect(payq_dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')
        with override_settings(PAYQ={"SCHEMA": payq_db.schema, "NOTIFY": False}):
            with transaction.atomic():
                enqueue("payout", {}, queue="quiet")
        with transaction.atomic():
            enqueue("payout", {}, queue="loud")
        received = next(listener.notifies(timeout=WAIT_S_MAX, stop_after=1), None)
    assert received is not None and received.payload == "loud"


def test_database_is_payq_own_connection_to_the_same_database(payq_app: Any, payq_db: payq.Database) -> None:
    db = database()
    assert db.schema == payq_db.schema and db is database()
    queued = db.enqueue("sms.send", {"to": "+86"})  # a transaction of its own: no atomic needed
    assert payq_db.tasks.get(queued.task_id).kind == "sms.send"


# ---------------------------------------------------------------- management commands


@pytest.fixture
def unmigrated_schema(payq_dsn: str) -> Iterator[str]:
    schema = f"t_django_migrate_{os.getpid()}"
    yield schema
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_payq_migrate_applies_payq_migrations_once(django_order_model: Any, payq_dsn: str,
                                                   unmigrated_schema: str) -> None:
    with override_settings(INSTALLED_APPS=["payq.contrib.django"], PAYQ={"SCHEMA": unmigrated_schema}):
        first, second = io.StringIO(), io.StringIO()
        call_command("payq_migrate", stdout=first)
        call_command("payq_migrate", stdout=second)
    assert f"to schema '{unmigrated_schema}'" in first.getvalue() and "applied migrations [1," in first.getvalue()
    assert f"schema '{unmigrated_schema}' is up to date" in second.getvalue()
    version = payq.connect(payq_dsn, schema=unmigrated_schema, migrate=False).schema_version()
    assert version == len(payq._native.core.migrations_known()) and f"version {version}" in second.getvalue()


@pytest.mark.parametrize("auto_migrate", [True, False])
def test_django_migrate_migrates_payq_too_unless_told_not_to(django_order_model: Any, payq_dsn: str,
                                                             unmigrated_schema: str, auto_migrate: bool) -> None:
    from django.db import connection

    out = io.StringIO()
    had_django_migrations = "django_migrations" in connection.introspection.table_names()
    try:
        with override_settings(INSTALLED_APPS=["payq.contrib.django"],
                               PAYQ={"SCHEMA": unmigrated_schema, "AUTO_MIGRATE": auto_migrate}):
            call_command("migrate", stdout=out, verbosity=1)
    finally:
        if not had_django_migrations:
            with connection.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS django_migrations")
    version = payq.connect(payq_dsn, schema=unmigrated_schema, migrate=False).schema_version()
    if auto_migrate:
        assert version > 0 and "payq: applied migrations" in out.getvalue()
    else:
        assert version == 0 and "payq: applied migrations" not in out.getvalue()


def test_payq_worker_without_handlers_is_a_command_error(payq_app: Any) -> None:
    with pytest.raises(CommandError, match="no handlers"):
        call_command("payq_worker")
    with pytest.raises(CommandError, match="not a whole number"):
        call_command("payq_worker", "--app", "shop.tasks", "--queues", "payouts:x")


WORKER_TASKS = '''
"""Handlers of the payq_worker test: each records its call and completes
its task in the same Django transaction."""
import os

from django.conf import settings
from django.db import connection, transaction

import payq
from payq.contrib.django import executor


@payq.handler("test.payout")
def payout(task):
    table = '"%s".handled' % settings.PAYQ["SCHEMA"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO " + table + " (task_id, pid) VALUES (%s, %s)", [task.id, os.getpid()])
        task.complete(executor(), {"paid": task.payload["amount"]})
'''


def django_settings_text(dsn: str, payq: Dict[str, Any]) -> str:
    params = conninfo(dsn)
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": params.get("dbname", ""),
                "USER": params.get("user", ""), "PASSWORD": params.get("password", ""),
                "HOST": params.get("host", ""), "PORT": params.get("port", "")}
    return (f"DATABASES = {{'default': {database!r}}}\nINSTALLED_APPS = ['payq.contrib.django']\n"
            f"PAYQ = {payq!r}\nUSE_TZ = True\nSECRET_KEY = 'test'\n")


def log_events(path: Path, event: Optional[str] = None) -> List[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and (event is None or record.get("event") == event):
            out.append(record)
    return out


def test_payq_worker_runs_a_task_and_stops_on_sigterm(payq_app: Any, payq_db: payq.Database, payq_dsn: str,
                                                      tmp_path: Path) -> None:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.handled (task_id bigint PRIMARY KEY, pid integer NOT NULL)")
    (tmp_path / "contrib_worker_tasks.py").write_text(WORKER_TASKS)
    (tmp_path / "contrib_worker_settings.py").write_text(django_settings_text(
        payq_dsn, {"SCHEMA": payq_db.schema, "QUEUES": ["payouts"], "APP": "contrib_worker_tasks", "CONCURRENCY": 1}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
           "DJANGO_SETTINGS_MODULE": "contrib_worker_settings"}
    stderr_path = tmp_path / "worker.stderr"
    with open(stderr_path, "wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "django", "payq_worker", "--poll-ms", "100", "--grace-s", "10"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True)
    try:
        logs = stderr_path.read_text
        wait_until(lambda: log_events(stderr_path, "worker_started") or worker.poll() is not None,
                   "the worker to start", logs)
        assert worker.poll() is None, logs()
        with transaction.atomic():
            queued = enqueue("test.payout", {"amount": "12.34"}, queue="payouts")
        done = wait_until(lambda: payq_db.tasks.get(queued.task_id).state == "succeeded" or worker.poll() is not None,
                          "the task to succeed", logs)
        assert done is True and worker.poll() is None, logs()
        assert payq_db.tasks.get(queued.task_id).result == {"paid": "12.34"}
        with payq_db.transaction() as t:
            assert t.execute("SELECT task_id, pid FROM @schema@.handled") == [(str(queued.task_id), str(worker.pid))]
        ready = log_events(stderr_path, "worker_ready")
        assert ready and ready[0]["kinds"] == ["test.payout"] and ready[0]["queues"] == [["payouts", 1]]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
        assert log_events(stderr_path, "worker_stopped"), logs()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_payq_worker_serves_metrics_on_metrics_port(payq_app: Any, payq_db: payq.Database, payq_dsn: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "contrib_metrics_tasks.py").write_text(WORKER_TASKS)
    (tmp_path / "contrib_metrics_settings.py").write_text(django_settings_text(
        payq_dsn, {"SCHEMA": payq_db.schema, "QUEUES": ["payouts"], "APP": "contrib_metrics_tasks"}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
           "DJANGO_SETTINGS_MODULE": "contrib_metrics_settings"}
    stderr_path = tmp_path / "worker.stderr"
    with open(stderr_path, "wb") as stderr:
        # Port 0: any free port, which worker_ready names.
        worker = subprocess.Popen([sys.executable, "-m", "django", "payq_worker", "--metrics-port", "0"],
                                  stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True)
    try:
        logs = stderr_path.read_text
        wait_until(lambda: log_events(stderr_path, "worker_ready") or worker.poll() is not None,
                   "the worker to start", logs)
        assert worker.poll() is None, logs()
        url = log_events(stderr_path, "worker_ready")[0]["metrics"]
        assert url and url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), logs()
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            text = response.read().decode()
        assert "# TYPE payq_" in text, text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# ---------------------------------------------------------------- the dashboard mount


class _User:
    def __init__(self, *, authenticated: bool = True, staff: bool = False) -> None:
        self.is_authenticated = authenticated
        self.is_active = authenticated
        self.is_staff = staff


def _urlconf(with_login: bool = False) -> types.ModuleType:
    from django.http import HttpResponse
    from django.urls import include, path

    module = types.ModuleType("payq_contrib_test_urls")
    module.urlpatterns = [path("ops/payq/", include("payq.contrib.django.urls"))]  # type: ignore[attr-defined]
    if with_login:  # where django.contrib.auth.urls puts its login view
        module.urlpatterns.append(path("accounts/login/", lambda request: HttpResponse("login"), name="login"))
    return module


def _dashboard_get(user: Optional[_User], with_login: bool = False) -> Any:
    from django.urls import resolve

    request = RequestFactory().get("/ops/payq/")
    if user is not None:
        request.user = user
    with override_settings(ROOT_URLCONF=_urlconf(with_login)):
        match = resolve("/ops/payq/")
        assert match.view_name == "payq:dashboard"
        return match.func(request)


def test_dashboard_mount_is_for_staff_only(payq_app: Any) -> None:
    from django.urls import reverse

    with override_settings(ROOT_URLCONF=_urlconf()):
        assert reverse("payq:dashboard") == "/ops/payq/"
    anonymous = _dashboard_get(_User(authenticated=False), with_login=True)
    assert anonymous.status_code == 302 and anonymous["Location"] == "/accounts/login/?next=%2Fops%2Fpayq%2F"
    # No authentication middleware: nobody is logged in.
    assert _dashboard_get(None, with_login=True).status_code == 302
    assert _dashboard_get(_User(staff=False)).status_code == 403
    staff = _dashboard_get(_User(staff=True))
    assert staff.status_code == 200 and b"<h1>Overview</h1>" in staff.content  # payq.dashboard (test_dashboard.py)


def test_dashboard_redirects_only_to_a_login_page_that_exists(payq_app: Any) -> None:
    # A fresh project: LOGIN_URL left at Django's default, /accounts/login/,
    # which nothing routes; a redirect there would end in a 404.
    for user in (_User(authenticated=False), None):
        refused = _dashboard_get(user)
        assert refused.status_code == 403 and refused["Content-Type"].startswith("text/plain")
        [hint] = refused.content.decode().splitlines()
        assert "log in" in hint and "settings.LOGIN_URL" in hint and "'/accounts/login/'" in hint
    # A LOGIN_URL naming no view cannot be followed either.
    with override_settings(LOGIN_URL="no-such-view"):
        refused = _dashboard_get(_User(authenticated=False))
    assert refused.status_code == 403 and "'no-such-view'" in refused.content.decode()
    # A configured path or absolute URL is trusted as set (another app or a
    # proxy may serve it); a URL name is reversed.
    for login_url, location in (("/sso/start/", "/sso/start/"),
                                ("https://sso.example.com/login", "https://sso.example.com/login"),
                                ("login", "/accounts/login/")):
        with override_settings(LOGIN_URL=login_url):
            redirected = _dashboard_get(_User(authenticated=False), with_login=login_url == "login")
        assert redirected.status_code == 302 and redirected["Location"] == f"{location}?next=%2Fops%2Fpayq%2F"


def test_dashboard_permission_is_configurable(payq_app: Any, payq_db: payq.Database) -> None:
    with override_settings(PAYQ={"SCHEMA": payq_db.schema, "DASHBOARD_PERMISSION": lambda request: True}):
        assert _dashboard_get(_User(staff=False)).status_code == 200


# ---------------------------------------------------------------- manage.py test


TEST_PROJECT_TESTS = '''
from django.db import transaction
from django.test import SimpleTestCase, TestCase

import payq
from payq.contrib.django import database, enqueue, tasks


class PlainTest(SimpleTestCase):
    """Never touches payq."""

    def test_arithmetic(self):
        self.assertEqual(1 + 1, 2)


class PayqTest(TestCase):
    """Uses Django's connection and payq's own, on the test database (which
    does not see the test's transaction: TestCase never commits)."""

    def test_enqueue(self):
        with transaction.atomic():
            queued = enqueue("shop.payout", {"order": 1}, queue="payouts")
            self.assertEqual(tasks().get(queued.task_id).state, "pending")
        self.assertGreater(database().schema_version(), 0)
'''


def django_test_project(tmp_path: Path, dsn: str, name: str) -> Path:
    """A fresh Django project with the payq app and default settings, and
    tests of its own (TEST_PROJECT_TESTS)."""
    project = tmp_path / "project"
    (project / "shop").mkdir(parents=True)
    (project / "manage.py").write_text(textwrap.dedent("""
        import sys
        from django.core.management import execute_from_command_line
        if __name__ == "__main__":
            execute_from_command_line(sys.argv)
    """))
    params = conninfo(dsn)
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": name, "HOST": params.get("host", ""),
                "PORT": params.get("port", ""), "USER": params.get("user", "")}
    (project / "shop_settings.py").write_text(
        f"DATABASES = {{'default': {database!r}}}\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth', 'payq.contrib.django', 'shop']\n"
        "SECRET_KEY = 'test'\nUSE_TZ = True\n")
    (project / "shop" / "__init__.py").write_text("")
    (project / "shop" / "tests.py").write_text(TEST_PROJECT_TESTS)
    return project


@pytest.mark.parametrize("parallel", [None, "2"], ids=["serial", "parallel"])
def test_manage_py_test_runs_twice_and_leaves_no_test_database(payq_dsn: str, tmp_path: Path,
                                                               parallel: Optional[str]) -> None:
    # AUTO_MIGRATE (the default) migrates payq into the test database, and
    # payq's pool keeps a connection there: PostgreSQL refused to copy it
    # for a parallel run, or to drop it at the end, while that connection
    # lived, so the run failed and the next one found the database still
    # there. Run as users do: no --noinput, nothing on stdin.
    name = f"fwshop_{os.getpid()}_{parallel or 1}"
    project = django_test_project(tmp_path, payq_dsn, name)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "shop_settings"}
    env.pop("PAYQ_DSN", None)
    command = [sys.executable, "manage.py", "test", "shop"] + (["--parallel", parallel] if parallel else [])
    try:
        for run in (1, 2):
            result = subprocess.run(command, cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"run {run}:\n{result.stdout}\n{result.stderr}"
            assert "Ran 2 tests" in result.stderr and "OK" in result.stderr, result.stderr
            with psycopg.connect(payq_dsn, autocommit=True) as admin:
                left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                     [f"test_{name}%"]).fetchall()
            assert left == [], f"run {run} left {left}"
    finally:
        with psycopg.connect(payq_dsn, autocommit=True) as admin:
            for (left_name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                              [f"test_{name}%"]).fetchall():
                admin.execute(f'DROP DATABASE IF EXISTS "{left_name}" WITH (FORCE)')


def test_closing_the_database_closes_its_idle_connections(payq_dsn: str) -> None:
    db = payq.connect(payq_dsn, schema=f"t_close_{os.getpid()}", migrate=False)
    tag = f"payq-close-{os.getpid()}"

    def tag_the_connection() -> None:
        # The transaction object dies with this call: its connection goes
        # back to the pool, idle.
        with db.transaction() as t:
            t.execute("SET application_name = " + "'" + tag + "'")

    tag_the_connection()

    def sessions() -> int:
        with psycopg.connect(payq_dsn, autocommit=True) as admin:
            return int(admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                     [tag]).fetchone()[0])

    assert sessions() == 1
    db.close()
    wait_until(lambda: sessions() == 0, "the pooled connection to close")
    assert db.closed and repr(db) == "<payq.Database closed>"
    with pytest.raises(payq.InvalidState, match="closed"):
        db.tasks
    db.close()  # idempotent


# ---------------------------------------------------------------- the example project


@pytest.fixture
def example_dsn(payq_dsn: str) -> Iterator[str]:
    """A database of its own for the example project (its Django tables
    live in the public schema), dropped afterwards."""
    name = f"djangoshop_{os.getpid()}"
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield psycopg.conninfo.make_conninfo(payq_dsn, dbname=name)
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, form: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_example_project_pays_and_refunds_orders(example_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "PAYQ_DSN": example_dsn}
    env.pop("DATABASE_URL", None)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE_DIR, env=env, capture_output=True,
                              text=True, timeout=300)

    migrated = manage("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying orders.0001_initial... OK" in migrated.stdout and "payq: applied migrations" in migrated.stdout
    again = manage("payq_migrate")
    assert again.returncode == 0 and "schema 'payq' is up to date" in again.stdout, again.stderr

    port = free_port()
    processes: List[Tuple[str, subprocess.Popen, Path]] = []
    for name, args in (("worker", ["payq_worker", "--poll-ms", "100", "--grace-s", "10"]),
                       ("server", ["runserver", f"127.0.0.1:{port}", "--noreload"])):
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            processes.append((name, subprocess.Popen([sys.executable, "manage.py", *args], cwd=EXAMPLE_DIR, env=env,
                                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True),
                              log))

    def logs() -> str:
        return "\n".join(f"--- {name} (exit {p.poll()}):\n{log.read_text(errors='replace')[-3000:]}"
                         for name, p, log in processes)

    base = f"http://127.0.0.1:{port}"

    def server_up() -> bool:
        try:
            return http("GET", f"{base}/orders/0")[0] == 404
        except OSError:
            return False

    try:
        wait_until(lambda: server_up() or any(p.poll() is not None for _, p, _ in processes), "the server", logs)
        assert all(p.poll() is None for _, p, _ in processes), logs()

        assert http("POST", f"{base}/wallets/alice/topup", {"amount": "100.00"})[0] == 200
        status, paid = http("POST", f"{base}/orders", {"user": "alice", "amount": "12.34",
                                                       "payout_to": "bank:merchant-1"})
        assert status == 201 and paid["status"] == "pending", paid
        status, refused = http("POST", f"{base}/orders", {"user": "alice", "amount": "5.00",
                                                          "payout_to": "invalid:closed-account"})
        assert status == 201, refused
        status, too_much = http("POST", f"{base}/orders", {"user": "alice", "amount": "1000.00",
                                                           "payout_to": "bank:merchant-1"})
        assert (status, too_much) == (409, {"error": "insufficient funds"})

        def order(order_id: int) -> Dict[str, Any]:
            return http("GET", f"{base}/orders/{order_id}")[1]

        wait_until(lambda: order(paid["id"])["status"] == "paid" and order(refused["id"])["status"] == "refunded",
                   "the payout and the refund", logs)
        assert order(paid["id"])["provider_ref"].startswith("sim-")
        assert http("GET", f"{base}/wallets/alice")[1]["balance"] == "87.66"  # 5.00 came back
        # The order refused for funds left no row (its id was drawn, then rolled back).
        assert http("GET", f"{base}/orders/{refused['id'] + 1}")[0] == 404
        # Reading an unknown wallet answers 404 and opens none.
        assert http("GET", f"{base}/wallets/nobody")[0] == 404

        db = payq.connect(example_dsn)
        assert db.tasks.get(paid["payout_task_id"]).state == "succeeded"
        assert db.tasks.get(refused["payout_task_id"]).state == "dead"
        assert db.ledger.audit().ok
        assert db.ledger.find_account("user:nobody", "CNY", "djangoshop") is None

        worker = processes[0][1]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
    finally:
        for _, process, _ in processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
