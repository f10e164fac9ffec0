"""One conformance suite for payq's three executors: the core's own libpqxx
transaction, the application executor (cpp/appconn/) over psycopg2, and over
psycopg 3. Django and SQLAlchemy hand payq one of those two drivers'
connections (python/payq/appconn.py), so these three are every path a
statement takes. Each test runs the same statements through
``payq::Executor`` (the GIL released, as core code does) and expects the
same rows, the same typed errors and the same savepoint behaviour."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pytest

import payq
from payq._native import core
from payq.appconn import app_executor

psycopg2 = pytest.importorskip("psycopg2")
psycopg = pytest.importorskip("psycopg")

Row = Tuple[Optional[str], ...]

EXECUTORS = ["libpqxx", "psycopg2", "psycopg"]


def run(executor: Any, sql: str, params: Sequence[Optional[str]] = ()) -> List[Row]:
    """A statement through Executor::exec, as the ledger and outbox send theirs."""
    _, rows = core._executor_exec(executor, sql, list(params))
    return rows


def columns(executor: Any, sql: str) -> List[str]:
    names, _ = core._executor_exec(executor, sql, [])
    return list(names)


def savepoint(executor: Any, action: str) -> None:
    core._executor_savepoint(executor, action)


@pytest.fixture(params=EXECUTORS)
def executor(request: Any, payq_dsn: str, payq_db: payq.Database) -> Iterator[Any]:
    """An executor inside an open transaction, rolled back afterwards."""
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.conformance (v text PRIMARY KEY)")
    if request.param == "libpqxx":
        transaction = payq_db._core.begin()
        yield transaction
        transaction.rollback()
        return
    driver = psycopg2 if request.param == "psycopg2" else psycopg
    connection = driver.connect(payq_dsn)
    try:
        yield app_executor(connection, schema=payq_db.schema)
        connection.rollback()
    finally:
        connection.close()


# ---------------------------------------------------------------- values


def test_values_arrive_as_postgresql_text(executor: Any) -> None:
    [row] = run(executor, "SELECT 42::bigint, 'a b'::text, NULL::text, true, false, 1.5::float8, 12.340::numeric, "
                          "'{1,2,NULL}'::int[], '{\"a\": [1, \"x\"]}'::jsonb, "
                          "'1 day 02:00:00'::interval, '2024-01-02'::date, "
                          "'6f1c1f6e-5d86-4f0e-9b07-000000000001'::uuid, '{\"a b\",c}'::text[]")
    assert row == ("42", "a b", None, "t", "f", "1.5", "12.340", "{1,2,NULL}", '{"a": [1, "x"]}',
                   "1 day 02:00:00", "2024-01-02", "6f1c1f6e-5d86-4f0e-9b07-000000000001", '{"a b",c}')


def test_column_names_and_row_order_are_kept(executor: Any) -> None:
    assert columns(executor, "SELECT 1 AS first, 2 AS second") == ["first", "second"]
    assert run(executor, "SELECT g::text FROM generate_series(3, 1, -1) AS g") == [("3",), ("2",), ("1",)]
    assert run(executor, "SELECT 1 WHERE false") == []


def test_parameters_bind_by_number_in_any_order_and_repeat(executor: Any) -> None:
    assert run(executor, "SELECT $2::text || $1::text || $2::text", ["a", "b"]) == [("bab",)]
    assert run(executor, "SELECT $1::text IS NULL", [None]) == [("t",)]


def test_parameters_are_never_spliced_into_sql(executor: Any) -> None:
    hostile = "x'); DROP TABLE conformance; --"
    assert run(executor, "SELECT $1::text", [hostile]) == [(hostile,)]
    assert run(executor, "SELECT '100%' || $1::text", ["!"]) == [("100%!",)]
    assert run(executor, "SELECT '%s %%'") == [("%s %%",)]
    assert run(executor, "SELECT $1::text", ["%s %(x)s"]) == [("%s %(x)s",)]


def test_schema_placeholder_names_the_executors_schema(executor: Any, payq_db: payq.Database) -> None:
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ($1)", ["one"])
    assert run(executor, "SELECT v FROM @schema@.conformance") == [("one",)]
    assert run(executor, "SELECT '@schema@'::text") == [(f'"{payq_db.schema}"',)]


def test_a_statement_without_rows_returns_none(executor: Any) -> None:
    assert run(executor, "UPDATE @schema@.conformance SET v = v") == []
    assert columns(executor, "UPDATE @schema@.conformance SET v = v") == []


def test_unicode_text_round_trips(executor: Any) -> None:
    text = "支付 ✓ \U0001F4B8 é"
    assert run(executor, "SELECT $1::text, length($1::text)", [text]) == [(text, str(len(text)))]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sql, sqlstate", [
    ("SELECT 1/0", "22012"),
    ("SELEC 1", "42601"),
    ("SELECT * FROM @schema@.no_such_table", "42P01"),
    ("DO $$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$", "P0001"),
])
def test_server_errors_are_database_errors_with_their_sqlstate(executor: Any, sql: str, sqlstate: str) -> None:
    with pytest.raises(payq.DatabaseError) as info:
        run(executor, sql)
    assert type(info.value) is payq.DatabaseError
    assert info.value.sqlstate == sqlstate


def test_a_duplicate_key_is_a_database_error(executor: Any) -> None:
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('k')")
    with pytest.raises(payq.DatabaseError) as info:
        run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('k')")
    assert type(info.value) is payq.DatabaseError
    assert info.value.sqlstate == "23505"


@pytest.mark.parametrize("sqlstate", ["40000", "40001", "40003", "40P01"])
def test_a_transaction_rollback_is_transient_with_its_sqlstate(executor: Any, sqlstate: str) -> None:
    # The server rolled the transaction back; it may be run again.
    with pytest.raises(payq.TransientError) as info:
        run(executor, f"DO $$ BEGIN RAISE EXCEPTION 'rolled back' USING ERRCODE = '{sqlstate}'; END $$")
    # libpqxx 6.4 keeps no SQLSTATE on its rollback exceptions, so payq's
    # own connection reports 40003 as the class's generic 40000.
    assert info.value.sqlstate in ((sqlstate, "40000") if sqlstate == "40003" else (sqlstate,))
    assert core.error_class_for_sqlstate(sqlstate) == "TransientError"


def test_a_deferred_constraint_failing_at_commit_is_not_transient(executor: Any) -> None:
    # 40002 would fail the same way again: no reason to re-run.
    with pytest.raises(payq.DatabaseError) as info:
        run(executor, "DO $$ BEGIN RAISE EXCEPTION 'integrity' USING ERRCODE = '40002'; END $$")
    assert type(info.value) is payq.DatabaseError
    assert info.value.sqlstate == "40002"
    assert core.error_class_for_sqlstate("40002") == "DatabaseError"


def test_after_a_failed_statement_the_transaction_is_aborted(executor: Any) -> None:
    with pytest.raises(payq.DatabaseError):
        run(executor, "SELECT 1/0")
    with pytest.raises(payq.DatabaseError) as info:
        run(executor, "SELECT 1")
    assert info.value.sqlstate == "25P02"


# ---------------------------------------------------------------- savepoints


def test_rolling_back_a_savepoint_undoes_only_its_statements(executor: Any) -> None:
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('before')")
    savepoint(executor, "begin")
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('inside')")
    savepoint(executor, "rollback")
    assert run(executor, "SELECT v FROM @schema@.conformance ORDER BY v") == [("before",)]
    assert executor.savepoint_depth == 0


def test_a_savepoint_rolled_back_after_an_error_leaves_the_transaction_usable(executor: Any) -> None:
    savepoint(executor, "begin")
    with pytest.raises(payq.DatabaseError):
        run(executor, "SELECT 1/0")
    savepoint(executor, "rollback")
    assert run(executor, "SELECT 1") == [("1",)]


def test_released_savepoints_keep_their_statements_at_any_depth(executor: Any) -> None:
    savepoint(executor, "begin")
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('outer')")
    savepoint(executor, "begin")
    assert executor.savepoint_depth == 2
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('inner')")
    savepoint(executor, "release")
    savepoint(executor, "begin")
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('undone')")
    savepoint(executor, "rollback")
    savepoint(executor, "release")
    assert executor.savepoint_depth == 0
    assert run(executor, "SELECT v FROM @schema@.conformance ORDER BY v") == [("inner",), ("outer",)]


def test_savepoints_use_payqs_names(executor: Any) -> None:
    savepoint(executor, "begin")
    savepoint(executor, "begin")
    run(executor, "INSERT INTO @schema@.conformance (v) VALUES ('x')")
    # The application (or a test) may address them by name: payq_sp_<depth>.
    run(executor, "ROLLBACK TO SAVEPOINT payq_sp_1")
    assert run(executor, "SELECT count(*) FROM @schema@.conformance") == [("0",)]


@pytest.mark.parametrize("action", ["release", "rollback"])
def test_ending_a_savepoint_that_was_never_begun_is_refused(executor: Any, action: str) -> None:
    with pytest.raises(payq.DatabaseError, match="no savepoint"):
        savepoint(executor, action)
    assert run(executor, "SELECT 1") == [("1",)]


# ---------------------------------------------------------------- payq's own work


def test_ledger_and_outbox_work_the_same_on_every_executor(executor: Any) -> None:
    ledger = payq.ledger.Ledger(executor)
    world = ledger.account("world", "CNY", allow_negative=True)
    wallet = ledger.account("user:1", "CNY")
    ledger.transfer(world, wallet, "10.00", key="fund-1")
    # A refusal payq decides after reading: no statement failed, so the
    # transaction goes on.
    with pytest.raises(payq.InsufficientFunds):
        ledger.transfer(wallet, world, "10.01", key="too-much")
    replay = ledger.transfer(world, wallet, "10.00", key="fund-1")
    assert replay.replayed
    assert ledger.get_account(wallet).balance.minor == 1000
    [created] = payq.outbox._enqueue_many(executor, [payq.TaskRequest("payout", {"n": 1}, queue="conformance")])
    [again] = payq.outbox._enqueue_many(executor, [payq.TaskRequest("payout", {"n": 1}, queue="conformance",
                                                                    unique_key="u")])
    assert created.created and again.created
    assert payq.outbox.Tasks(executor).get(created.task_id).state == "pending"
