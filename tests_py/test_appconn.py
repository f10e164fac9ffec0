"""payq on the application's own connection (python/payq/appconn.py and
bindings/bind_app_executor.cpp): statements sent through the executor join
the application's transaction under psycopg2, psycopg 3, Django and
SQLAlchemy, and values and errors cross the boundary typed."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pytest

import payq
from payq._native import core
from payq.appconn import app_executor, savepoint

# The applications are shared with test_ledger_appconn.py, and so are the fixtures
# app_open asks for.
from appconn_support import APP_KINDS, app_open, committed
from appconn_support import django_order_model, engine_psycopg, engine_psycopg2  # noqa: F401 (fixtures)

psycopg2 = pytest.importorskip("psycopg2")
psycopg = pytest.importorskip("psycopg")

Row = Tuple[Optional[str], ...]


def run(executor: Any, sql: str, params: Sequence[Optional[str]] = ()) -> List[Row]:
    """Runs a statement the way core code does: through Executor, GIL released."""
    _, rows = core._executor_exec(executor, sql, list(params))
    return rows


@pytest.fixture(params=APP_KINDS)
def app(request: Any, payq_dsn: str, payq_db: payq.Database) -> Iterator[Any]:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.note (v text PRIMARY KEY)")
        t.execute("CREATE TABLE @schema@.app_row (v text)")
    application = app_open(request, request.param, payq_dsn, payq_db.schema, "app_row")
    yield application
    application.close()


# ---------------------------------------------------------------- transactions


def test_commit_keeps_payq_and_app_writes(app: Any, payq_db: payq.Database) -> None:
    with app.transaction() as executor:
        app.insert("app")
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["payq"])
    assert committed(payq_db, "@schema@.note") == ["payq"]
    assert committed(payq_db, app.table) == ["app"]


def test_rollback_discards_payq_and_app_writes(app: Any, payq_db: payq.Database) -> None:
    with pytest.raises(RuntimeError):
        with app.transaction() as executor:
            run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["payq"])
            app.insert("app")
            raise RuntimeError("the view failed after both writes")
    assert committed(payq_db, "@schema@.note") == []
    assert committed(payq_db, app.table) == []


def test_savepoint_rollback_undoes_only_inner_part(app: Any, payq_db: payq.Database) -> None:
    with app.transaction() as executor:
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["outer"])
        with pytest.raises(payq.DatabaseError) as caught:
            with savepoint(executor):
                run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["inner"])
                run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["outer"])  # duplicate key
        assert caught.value.sqlstate == "23505"
        assert executor.savepoint_depth == 0
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["after"])
        app.insert("app")
    assert committed(payq_db, "@schema@.note") == ["after", "outer"]
    assert committed(payq_db, app.table) == ["app"]


def test_nested_savepoints_through_the_executor_interface(app: Any, payq_db: payq.Database) -> None:
    with app.transaction() as executor:
        core._executor_savepoint(executor, "begin")
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["kept"])
        core._executor_savepoint(executor, "begin")
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["undone"])
        assert executor.savepoint_depth == 2
        core._executor_savepoint(executor, "rollback")
        core._executor_savepoint(executor, "release")
        assert executor.savepoint_depth == 0
    assert committed(payq_db, "@schema@.note") == ["kept"]


def test_sql_error_is_database_error_with_sqlstate(app: Any) -> None:
    with pytest.raises(payq.DatabaseError) as caught:
        with app.transaction() as executor:
            run(executor, "SELECT 1 / $1::int", ["0"])
    assert type(caught.value) is payq.DatabaseError
    assert caught.value.sqlstate == "22012"
    assert "division by zero" in str(caught.value)


def test_serialization_failure_is_transient_error(app: Any) -> None:
    with pytest.raises(payq.TransientError) as caught:
        with app.transaction() as executor:
            run(executor, "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")
    assert caught.value.sqlstate == "40001"


# ---------------------------------------------------------------- values


def test_parameters_convert_exactly(app: Any) -> None:
    awkward_text = "100% of $1, %s and %% — 'quoted' \\ \"double\""
    params = [
        str(2**53 + 1), "12.345678901234567890", "t", "f", awkward_text, None, '{"k": [1, 2.5, "é"]}', str(-(2**63))
    ]
    with app.transaction() as executor:
        columns, rows = core._executor_exec(
            executor,
            "SELECT $1::bigint AS big, $1::bigint - 2 AS big_less, $2::numeric AS amount, $3::bool AS yes, "
            "$4::bool AS no, $5::text AS note, $6::text AS missing, $7::jsonb AS doc, $8::bigint AS low",
            params,
        )
    assert columns == ["big", "big_less", "amount", "yes", "no", "note", "missing", "doc", "low"]
    assert rows == [
        (str(2**53 + 1), str(2**53 - 1), "12.345678901234567890", "t", "f", awkward_text, None,
         '{"k": [1, 2.5, "é"]}', str(-(2**63)))
    ]


def test_percent_and_dollar_in_sql_text_survive(app: Any) -> None:
    with app.transaction() as executor:
        with_params = run(executor, "SELECT '5% of $1' || $1::text AS a, 7 % $2::int AS b", ["!", "4"])
        without_params = run(executor, "SELECT '5% of $1' AS a, 7 % 4 AS b")
    assert with_params == [("5% of $1!", "3")]
    assert without_params == [("5% of $1", "3")]


# One of every type payq's SQL might select. Not here, because a driver's
# Python value cannot say it exactly: json (whitespace is lost), intervals
# with months (a timedelta has none), bytea (refused).
PARITY_SQL = """
SELECT 9223372036854775807::bigint AS i8, 2147483647 AS i4, NULL::int AS nothing,
       true AS yes, 'éß ✓'::text AS t, '0.0000001'::numeric AS tiny, '12.3400'::numeric AS padded,
       'NaN'::numeric AS nan, '-Infinity'::numeric AS minf,
       0.1::float8 AS f1, 1e15::float8 AS f2, 123::float8 AS f3, 1e-5::float8 AS f4,
       'NaN'::float8 AS f5, '-Infinity'::float8 AS f6, 1234567890123456.2::float8 AS f7,
       '2024-02-29'::date AS d, '2024-01-02 03:04:05.12'::timestamp AS ts, '2024-01-02 03:04:05'::timestamp AS ts0,
       '2024-07-02 03:04:05.123456+00'::timestamptz AS tstz, '12:34:56.789'::time AS tm,
       interval '1 day 02:03:04.5' AS iv1, interval '-1 hour' AS iv2, interval '3 days' AS iv3,
       interval '0' AS iv4, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
       '{"b": [1, 2.5, "é", null], "a": {"x": true}}'::jsonb AS doc,
       '{1,NULL,3}'::int[] AS ints, '{{1,2},{3,4}}'::int[] AS grid,
       ARRAY['a b', '', 'NULL', 'x"y', 'q\\z', 'plain', NULL]::text[] AS texts,
       '192.168.0.1'::inet AS host, '10.0.0.0/8'::cidr AS net
"""


def test_results_match_payq_own_connection(app: Any, payq_db: payq.Database) -> None:
    with app.transaction() as executor:
        if app.name != "django":  # Django turns timestamps to UTC itself
            run(executor, "SELECT set_config('TimeZone', 'Asia/Kolkata', true)")
        [(time_zone,)] = run(executor, "SHOW TimeZone")
        app_columns, app_rows = core._executor_exec(executor, PARITY_SQL, [])
    with payq_db.transaction() as t:
        # Timestamps are shown in the session's zone; compare like with like.
        t.execute("SELECT set_config('TimeZone', $1, true)", [time_zone])
        own_columns, own_rows = t._tx.execute(PARITY_SQL, [])
    assert app_columns == own_columns
    assert dict(zip(app_columns, app_rows[0])) == dict(zip(own_columns, own_rows[0]))


def test_results_of_a_statement_without_rows_are_empty(app: Any) -> None:
    with app.transaction() as executor:
        columns, rows = core._executor_exec(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["x"])
    assert (columns, rows) == ([], [])


# ---------------------------------------------------------------- the GIL


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_executor_waits_without_holding_the_gil(driver: str, payq_dsn: str, payq_db: payq.Database) -> None:
    """A statement blocked inside the executor, on a lock the main thread
    holds, must let the main thread run Python to release it."""
    lock_key = "915273"
    holder = psycopg2.connect(payq_dsn)
    holder.autocommit = True
    connection = psycopg2.connect(payq_dsn) if driver == "psycopg2" else psycopg.connect(payq_dsn)
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (int(lock_key),))
        executor = app_executor(connection, schema=payq_db.schema)
        [(backend_pid,)] = run(executor, "SELECT pg_backend_pid()::text")
        outcome: dict = {}

        def wait_for_lock() -> None:
            try:
                outcome["rows"] = run(
                    executor, "SELECT true AS locked FROM pg_advisory_xact_lock($1::bigint)", [lock_key]
                )
            except BaseException as error:  # reported to the main thread
                outcome["error"] = error

        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        deadline = time.monotonic() + 30
        with holder.cursor() as cursor:
            while True:
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (int(backend_pid),))
                if cursor.fetchone() == ("Lock",):
                    break
                assert time.monotonic() < deadline, "the executor's statement never reached the lock"
            cursor.execute("SELECT pg_advisory_unlock(%s)", (int(lock_key),))
        waiter.join(timeout=30)
        assert not waiter.is_alive()
        assert outcome == {"rows": [("t",)]}
    finally:
        connection.rollback()
        connection.close()
        holder.close()


# ---------------------------------------------------------------- recognising connections


def test_psycopg2_in_autocommit_is_refused(payq_dsn: str) -> None:
    connection = psycopg2.connect(payq_dsn)
    connection.autocommit = True
    try:
        with pytest.raises(payq.InvalidArgument, match="autocommit"):
            app_executor(connection)
    finally:
        connection.close()


def test_psycopg_keeps_its_row_factory_for_the_application(payq_dsn: str) -> None:
    from psycopg.rows import dict_row

    with psycopg.connect(payq_dsn, row_factory=dict_row) as connection:
        executor = app_executor(connection)
        assert run(executor, "SELECT 1 AS one") == [("1",)]
        assert connection.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_django_outside_atomic_is_refused(django_order_model: Any) -> None:
    from django.db import connections

    with pytest.raises(payq.InvalidArgument, match="atomic"):
        app_executor(connections["default"])


def test_django_sees_payq_statements(django_order_model: Any, payq_db: payq.Database) -> None:
    """Statements go through Django's cursor wrapper, so its execute
    wrappers (query logging, assertNumQueries, debug toolbars) see them."""
    from django.db import connection, transaction

    seen: List[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with transaction.atomic(), connection.execute_wrapper(record):
        run(app_executor(connection, schema=payq_db.schema), "SELECT $1::int AS n", ["5"])
    assert seen == ["SELECT %s::int AS n"]


DJANGO_ON_PSYCOPG2 = """
import sys
sys.modules["psycopg"] = None  # hidden, so Django falls back to psycopg2
import django, payq
from django.conf import settings
from psycopg2.extensions import parse_dsn
from payq._native import core
from payq.appconn import app_executor

params = parse_dsn(sys.argv[1])
settings.configure(USE_TZ=True, DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"], "USER": params.get("user", ""),
    "PASSWORD": params.get("password", ""), "HOST": params.get("host", ""), "PORT": params.get("port", "")}})
django.setup()
from django.db import connection, transaction
with transaction.atomic():
    executor = app_executor(connection, schema=sys.argv[2])
    assert type(connection.connection).__module__.startswith("psycopg2")
    assert core._executor_exec(executor, "SELECT $1::bigint AS n", [str(2**62)]) == (["n"], [(str(2**62),)])
    try:
        core._executor_exec(executor, "SELECT 1 / 0", [])
    except payq.DatabaseError as error:
        assert error.sqlstate == "22012"
    else:
        raise AssertionError("no error")
print("ok")
"""


def test_django_on_psycopg2(payq_dsn: str, payq_db: payq.Database) -> None:
    """Django prefers psycopg 3 when both are installed; a process of its own
    proves the psycopg2 backend too."""
    pytest.importorskip("django")
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_ON_PSYCOPG2, payq_dsn, payq_db.schema],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_sqlalchemy_work_joins_a_transaction_begun_by_the_executor(
    engine_psycopg2: Any, payq_db: payq.Database
) -> None:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.note (v text)")
    with engine_psycopg2.connect() as connection:
        executor = app_executor(connection, schema=payq_db.schema)
        assert connection.in_transaction()
        run(executor, "INSERT INTO @schema@.note (v) VALUES ($1)", ["payq"])
        connection.commit()
    assert committed(payq_db, "@schema@.note") == ["payq"]


def test_sqlalchemy_autocommit_is_refused_before_anything_begins(engine_psycopg2: Any) -> None:
    with engine_psycopg2.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        with pytest.raises(payq.InvalidArgument, match="autocommit"):
            app_executor(connection)
        assert not connection.in_transaction()


def test_unknown_connection_is_invalid_argument() -> None:
    with pytest.raises(payq.InvalidArgument, match="cannot run payq"):
        app_executor(object())


def test_bad_schema_is_config_error(payq_dsn: str) -> None:
    with psycopg.connect(payq_dsn) as connection:
        with pytest.raises(payq.ConfigError):
            app_executor(connection, schema='x"; DROP TABLE y; --')


def test_executor_from_takes_payq_own_transaction(payq_db: payq.Database) -> None:
    with payq_db.transaction() as t:
        assert run(t._tx, "SELECT $1::bigint + 1 AS n", [str(2**62)]) == [(str(2**62 + 1),)]


def test_executor_from_rejects_anything_else() -> None:
    with pytest.raises(payq.InvalidArgument, match="payq executor"):
        core._executor_exec(object(), "SELECT 1", [])
    with pytest.raises(payq.InvalidArgument):
        core._executor_savepoint(object(), "begin")


# ---------------------------------------------------------------- a DB-API cursor seen from inside


class FakeCursor:
    """Records what the executor sends and answers with chosen Python values."""

    def __init__(self, description: Any = None, rows: Any = (), error: Optional[BaseException] = None) -> None:
        self.description = description
        self.rows = list(rows)
        self.error = error
        self.calls: List[Tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.calls.append((sql, params))
        if self.error is not None:
            raise self.error

    def fetchall(self) -> List[Any]:
        return self.rows


class FakeConnection:
    def __init__(self, cursor: FakeCursor) -> None:
        self._cursor = cursor

    def cursor(self) -> FakeCursor:
        return self._cursor


def test_sql_is_rewritten_for_format_style_drivers() -> None:
    cursor = FakeCursor()
    executor = app_executor(FakeConnection(cursor), schema="money")
    run(executor, "SELECT $2, $1, $2 FROM @schema@.t WHERE v LIKE '50%' AND w = '$1'", ["a", "b"])
    run(executor, "SELECT '50%' FROM @schema@.t")
    assert cursor.calls == [
        ("SELECT %s, %s, %s FROM \"money\".t WHERE v LIKE '50%%' AND w = '$1'", ["b", "a", "b"]),
        ("SELECT '50%' FROM \"money\".t", None),
    ]


def test_wrong_parameter_count_is_invalid_argument() -> None:
    executor = core.AppExecutor(FakeCursor(), "payq")
    with pytest.raises(payq.InvalidArgument, match="takes 2 parameters, got 1"):
        run(executor, "SELECT $1, $2", ["a"])


def test_object_without_execute_is_not_a_cursor() -> None:
    with pytest.raises(payq.InvalidArgument, match="DB-API cursor"):
        core.AppExecutor(object(), "payq")


def test_savepoints_use_payq_names_and_check_depth() -> None:
    cursor = FakeCursor()
    executor = core.AppExecutor(cursor, "payq")
    with pytest.raises(payq.DatabaseError, match="no savepoint"):
        executor.savepoint_release()
    with savepoint(executor):
        with pytest.raises(KeyError):
            with savepoint(executor):
                raise KeyError("inner")
    assert [sql for sql, _ in cursor.calls] == [
        "SAVEPOINT payq_sp_1",
        "SAVEPOINT payq_sp_2",
        "ROLLBACK TO SAVEPOINT payq_sp_2",
        "RELEASE SAVEPOINT payq_sp_2",
        "RELEASE SAVEPOINT payq_sp_1",
    ]


def one_value(value: Any, type_code: Any = None) -> Optional[str]:
    executor = core.AppExecutor(FakeCursor(description=[("v", type_code)], rows=[(value,)]), "payq")
    [(text,)] = run(executor, "SELECT v")
    return text


@pytest.mark.parametrize(
    "value, text",
    [
        (None, None),
        (True, "t"),
        (2**70, str(2**70)),
        (-5, "-5"),
        ("x", "x"),
        (decimal.Decimal("1E-7"), "0.0000001"),
        (decimal.Decimal("-Infinity"), "-Infinity"),
        (1e15, "1e+15"),
        (100.0, "100"),
        (float("inf"), "Infinity"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=datetime.timezone.utc), "2024-01-02 03:04:05.12+00"),
        (
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
            "2024-01-02 03:04:05+05:30",
        ),
        (
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
            "2024-01-02 03:04:05-03",
        ),
        (datetime.date(2024, 2, 29), "2024-02-29"),
        (datetime.time(1, 2, 3, 500000, tzinfo=datetime.timezone(datetime.timedelta(hours=1))), "01:02:03.5+01"),
        (datetime.timedelta(days=-1, hours=-1), "-1 days -01:00:00"),
        (uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005"),
        (ipaddress.ip_address("::1"), "::1"),
        ([["a b", None], ["", "NULL"]], '{{"a b",NULL},{"",\"NULL\"}}'),
        ({"a": [1, 2.5, "é"]}, '{"a": [1, 2.5, "é"]}'),
    ],
)
def test_python_values_become_postgresql_text(value: Any, text: Optional[str]) -> None:
    assert one_value(value) == text


def test_json_columns_are_json_text_whatever_the_driver_parsed() -> None:
    jsonb = 3802
    assert one_value(True, jsonb) == "true"
    assert one_value([1, "a"], jsonb) == '[1, "a"]'
    assert one_value('{"as": "text"}', jsonb) == '{"as": "text"}'  # a driver that leaves json alone


def test_rows_from_a_dict_row_factory_are_read_by_column_name() -> None:
    cursor = FakeCursor(description=[("a", None), ("b", None)], rows=[{"b": 2, "a": 1}])
    assert run(core.AppExecutor(cursor, "payq"), "SELECT a, b") == [("1", "2")]


@pytest.mark.parametrize("value", [b"\x00", bytearray(b"x"), memoryview(b"x"), object()])
def test_values_without_a_text_form_are_database_errors(value: Any) -> None:
    with pytest.raises(payq.DatabaseError, match="column 'v'"):
        one_value(value)


class DriverError(Exception):
    def __init__(self, message: str, **attributes: Any) -> None:
        super().__init__(message)
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    "error, kind, sqlstate",
    [
        (DriverError("deadlock detected", sqlstate="40P01"), payq.TransientError, "40P01"),
        (DriverError("duplicate key", pgcode="23505"), payq.DatabaseError, "23505"),
        # SQLAlchemy keeps the driver's error in `orig`.
        (DriverError("wrapped", orig=DriverError("bad input", sqlstate="22P02")), payq.DatabaseError, "22P02"),
        (DriverError("cursor already closed"), payq.DatabaseError, None),
    ],
)
def test_driver_errors_become_payq_errors(error: BaseException, kind: type, sqlstate: Optional[str]) -> None:
    executor = core.AppExecutor(FakeCursor(error=error), "payq")
    with pytest.raises(kind) as caught:
        run(executor, "SELECT 1")
    assert type(caught.value) is kind
    assert caught.value.sqlstate == sqlstate


def test_django_style_error_chain_keeps_the_sqlstate() -> None:
    # Django raises its own class `from` the driver's error.
    try:
        try:
            raise DriverError("could not serialize access", pgcode="40001")
        except DriverError as driver_error:
            raise DriverError("could not serialize access") from driver_error
    except DriverError as wrapped:
        error = wrapped
    executor = core.AppExecutor(FakeCursor(error=error), "payq")
    with pytest.raises(payq.TransientError) as caught:
        run(executor, "SELECT 1")
    assert caught.value.sqlstate == "40001"


def test_keyboard_interrupt_is_not_turned_into_a_database_error() -> None:
    executor = core.AppExecutor(FakeCursor(error=KeyboardInterrupt()), "payq")
    with pytest.raises(KeyboardInterrupt):
        run(executor, "SELECT 1")
