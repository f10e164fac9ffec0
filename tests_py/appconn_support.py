"""Applications that hold their own transactions, for the tests of payq on
the application's connection (test_appconn.py, test_ledger_appconn.py).

Each application runs one driver the way its documentation recommends.
``transaction()`` commits when the block ends normally, rolls back when it
raises, and yields a payq executor on the connection; inside it ``handle`` is
what an application passes to ``payq.ledger.on(...)``, ``insert(v)`` writes
the application's own row, and ``savepoint()`` is the driver's own nested
transaction. ``disconnect()`` closes the calling thread's connection;
``close()`` also removes the rows a shared table (Django's) keeps.

A test module that uses :func:`app_open` imports the fixtures it asks for:
``django_order_model``, ``engine_psycopg2`` and ``engine_psycopg``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import pytest

import payq
from payq.appconn import app_executor

psycopg2 = pytest.importorskip("psycopg2")
psycopg = pytest.importorskip("psycopg")

APP_KINDS = ["psycopg2", "psycopg", "django", "sqlalchemy-connection", "sqlalchemy-session"]


def conninfo(dsn: str) -> Dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}


def committed(db: payq.Database, table: str) -> List[Optional[str]]:
    """What another connection sees in `table`: only committed rows."""
    with db.transaction() as t:
        return [row[0] for row in t.execute(f"SELECT v FROM {table} ORDER BY v")]


class Psycopg2App:
    name = "psycopg2"

    def __init__(self, dsn: str, schema: str, table: str) -> None:
        self.connection = psycopg2.connect(dsn)
        self.schema = schema
        self.table = f'"{schema}".{table}'

    @property
    def handle(self) -> Any:
        return self.connection

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        try:
            yield app_executor(self.connection, schema=self.schema)
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        # psycopg2 has no savepoint API: applications send the SQL themselves.
        with self.connection.cursor() as cursor:
            cursor.execute("SAVEPOINT app_savepoint")
        try:
            yield
        except BaseException:
            with self.connection.cursor() as cursor:
                cursor.execute("ROLLBACK TO SAVEPOINT app_savepoint")
            raise
        with self.connection.cursor() as cursor:
            cursor.execute("RELEASE SAVEPOINT app_savepoint")

    def insert(self, value: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {self.table} (v) VALUES (%s)", (value,))

    def disconnect(self) -> None:
        self.connection.close()

    close = disconnect


class PsycopgApp:
    """psycopg 3 as its documentation recommends: autocommit, with explicit
    transaction blocks."""

    name = "psycopg"

    def __init__(self, dsn: str, schema: str, table: str) -> None:
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.schema = schema
        self.table = f'"{schema}".{table}'

    @property
    def handle(self) -> Any:
        return self.connection

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.connection.transaction():
            yield app_executor(self.connection, schema=self.schema)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.connection.transaction():
            yield

    def insert(self, value: str) -> None:
        self.connection.execute(f"INSERT INTO {self.table} (v) VALUES (%s)", (value,))

    def disconnect(self) -> None:
        self.connection.close()

    close = disconnect


class DjangoApp:
    name = "django"

    def __init__(self, order_model: Any, schema: str) -> None:
        from django.db import connection

        self.connection = connection
        self.model = order_model
        self.schema = schema
        self.table = order_model._meta.db_table

    @property
    def handle(self) -> Any:
        return self.connection

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        from django.db import transaction

        with transaction.atomic():
            yield app_executor(self.connection, schema=self.schema)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        from django.db import transaction

        with transaction.atomic():
            yield

    def insert(self, value: str) -> None:
        self.model.objects.create(v=value)

    def disconnect(self) -> None:
        self.connection.close()  # the calling thread's connection

    def close(self) -> None:
        self.model.objects.all().delete()


class SqlAlchemyConnectionApp:
    name = "sqlalchemy-connection"

    def __init__(self, engine: Any, schema: str, table: str) -> None:
        self.engine = engine
        self.schema = schema
        self.table = f'"{schema}".{table}'
        self.connection: Any = None

    @property
    def handle(self) -> Any:
        return self.connection

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.engine.connect() as connection:
            self.connection = connection
            try:
                yield app_executor(connection, schema=self.schema)
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.connection.begin_nested():
            yield

    def insert(self, value: str) -> None:
        from sqlalchemy import text

        self.connection.execute(text(f"INSERT INTO {self.table} (v) VALUES (:v)"), {"v": value})

    def disconnect(self) -> None:
        pass  # the connection went back to the engine's pool

    close = disconnect


class SqlAlchemySessionApp:
    name = "sqlalchemy-session"

    def __init__(self, engine: Any, schema: str, table: str) -> None:
        self.engine = engine
        self.schema = schema
        self.table = f'"{schema}".{table}'
        self.session: Any = None

    @property
    def handle(self) -> Any:
        return self.session

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            self.session = session
            yield app_executor(session, schema=self.schema)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.session.begin_nested():
            yield

    def insert(self, value: str) -> None:
        from sqlalchemy import text

        self.session.execute(text(f"INSERT INTO {self.table} (v) VALUES (:v)"), {"v": value})

    def disconnect(self) -> None:
        pass  # the connection went back to the engine's pool

    close = disconnect


def app_open(request: Any, kind: str, dsn: str, schema: str, table: str) -> Any:
    """The application of `kind` (one of APP_KINDS), writing its rows to
    `table` (text column `v`) in `schema`; Django writes to its model's
    table instead."""
    if kind == "psycopg2":
        return Psycopg2App(dsn, schema, table)
    if kind == "psycopg":
        return PsycopgApp(dsn, schema, table)
    if kind == "django":
        return DjangoApp(request.getfixturevalue("django_order_model"), schema)
    if kind == "sqlalchemy-connection":
        return SqlAlchemyConnectionApp(request.getfixturevalue("engine_psycopg2"), schema, table)
    if kind == "sqlalchemy-session":
        return SqlAlchemySessionApp(request.getfixturevalue("engine_psycopg"), schema, table)
    raise AssertionError(f"unknown application kind {kind!r}")


# ---------------------------------------------------------------- Django

_django_order_models: Dict[str, Any] = {}


def _django_order_model_define(dsn: str) -> Any:
    """Configures Django for the cluster and defines the Order model, once per
    process: Django's settings and app registry are process-wide, and a
    model defined twice is a warning."""
    if dsn in _django_order_models:
        return _django_order_models[dsn]
    django = pytest.importorskip("django")
    from django.conf import settings

    params = conninfo(dsn)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
    }
    if not settings.configured:
        settings.configure(DATABASES={"default": database}, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    elif settings.DATABASES["default"].get("NAME") != database["NAME"]:
        pytest.skip("Django is already configured for another database in this process")

    from django.db import models

    class Order(models.Model):
        v = models.TextField()

        class Meta:
            app_label = "payq_appconn_test"
            db_table = f"payq_appconn_order_{os.getpid()}"

    _django_order_models[dsn] = Order
    return Order


@pytest.fixture(scope="module")
def django_order_model(payq_dsn: str) -> Iterator[Any]:
    """A minimal Django project on the session's cluster, with one model
    whose table exists for the module."""
    order_model = _django_order_model_define(payq_dsn)
    from django.db import connection

    with connection.schema_editor() as editor:
        editor.create_model(order_model)
    yield order_model
    with connection.schema_editor() as editor:
        editor.delete_model(order_model)
    connection.close()


# ---------------------------------------------------------------- SQLAlchemy


def sqlalchemy_engine(dsn: str, driver: str) -> Any:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    params = conninfo(dsn)
    url = sqlalchemy.engine.URL.create(
        f"postgresql+{driver}",
        username=params.get("user"),
        password=params.get("password"),
        database=params.get("dbname"),
        query={key: params[key] for key in ("host", "port") if key in params},
    )
    return sqlalchemy.create_engine(url)


@pytest.fixture(scope="module")
def engine_psycopg2(payq_dsn: str) -> Iterator[Any]:
    engine = sqlalchemy_engine(payq_dsn, "psycopg2")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def engine_psycopg(payq_dsn: str) -> Iterator[Any]:
    engine = sqlalchemy_engine(payq_dsn, "psycopg")
    yield engine
    engine.dispose()
