import decimal
import threading

import pytest

import payq


def test_malformed_dsn_is_config_error():
    with pytest.raises(payq.ConfigError):
        payq.connect("this is not a dsn")


def test_unreachable_server_is_database_error():
    with pytest.raises(payq.DatabaseError):
        payq.connect("host=/nonexistent-payq-dir port=5432 dbname=x connect_timeout=2")


def test_bad_schema_name_is_config_error(payq_dsn):
    with pytest.raises(payq.ConfigError):
        payq.connect(payq_dsn, schema='x"; DROP TABLE y; --')


def test_dsn_argument_beats_environment(payq_dsn, monkeypatch):
    monkeypatch.setenv("PAYQ_DSN", "host=/nonexistent-payq-dir dbname=x")
    db = payq.connect(payq_dsn, migrate=False)
    assert db.dsn == payq_dsn
    assert db.dsn_source == "argument"


def test_environment_beats_embedded(payq_dsn, monkeypatch):
    monkeypatch.setenv("PAYQ_DSN", payq_dsn)
    monkeypatch.setenv("PAYQ_HOME", "/nonexistent/never-created")
    db = payq.connect(migrate=False)
    assert db.dsn_source == "environment"


def test_commit_keeps_and_rollback_discards(payq_db):
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.t (v int)")
    with payq_db.transaction() as t:
        t.execute("INSERT INTO @schema@.t VALUES ($1)", [1])
    with pytest.raises(RuntimeError):
        with payq_db.transaction() as t:
            t.execute("INSERT INTO @schema@.t VALUES ($1)", [2])
            raise RuntimeError("boom")
    with payq_db.transaction() as t:
        assert t.execute("SELECT v FROM @schema@.t") == [("1",)]


def test_savepoint_failure_is_caught_and_outer_goes_on(payq_db):
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.t (v int PRIMARY KEY)")
    with payq_db.transaction() as t:
        t.execute("INSERT INTO @schema@.t VALUES (1)")
        with pytest.raises(payq.DatabaseError):
            with t.savepoint():
                t.execute("INSERT INTO @schema@.t VALUES (2)")
                t.execute("INSERT INTO @schema@.t VALUES (1)")  # duplicate
        assert t.savepoint_depth == 0
        t.execute("INSERT INTO @schema@.t VALUES (3)")
    with payq_db.transaction() as t:
        assert t.execute("SELECT v FROM @schema@.t ORDER BY v") == [("1",), ("3",)]


def test_parameters_convert_exactly_and_reject_float(payq_db):
    with payq_db.transaction() as t:
        rows = t.execute("SELECT $1::bigint, $2::numeric, $3::bool, $4::text, $5::text",
                         [2**62, decimal.Decimal("12.34"), True, "x", None])
        assert rows == [(str(2**62), "12.34", "t", "x", None)]
        with pytest.raises(payq.InvalidArgument):
            t.execute("SELECT $1", [1.5])


def test_database_is_usable_from_many_threads(payq_db):
    errors = []

    def work():
        try:
            for _ in range(20):
                with payq_db.transaction() as t:
                    assert t.execute("SELECT 1") == [("1",)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_database_calls_release_the_gil(payq_db):
    # pg_sleep runs with the GIL released, so another Python thread progresses.
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.005)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        with payq_db.transaction() as t:
            t.execute("SELECT pg_sleep(0.3)")
    finally:
        stop.set()
        thread.join()
    assert len(ticks) >= 10


def test_an_unreachable_host_of_a_multi_host_dsn_is_skipped(payq_dsn: str) -> None:
    # Issue 14: a multi-host DSN (as after a failover) skips a host that
    # does not answer, within connect_timeout, and finds the primary.
    fields = dict(part.split("=", 1) for part in payq_dsn.split())
    dsn = (f"host=/nonexistent/payq,{fields['host']} port=5432,{fields.get('port', '5432')} "
           f"user={fields['user']} dbname={fields['dbname']} connect_timeout=2 target_session_attrs=read-write")
    db = payq.connect(dsn, schema="multi_host", migrate=True)
    with db.transaction() as t:
        assert t.execute("SELECT 1")[0][0] == "1"
        t.execute("DROP SCHEMA @schema@ CASCADE")
