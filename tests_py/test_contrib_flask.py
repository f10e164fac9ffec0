"""payq as a Flask extension (python/payq/contrib/flask.py): configuration
checked by ``init_app``, a payq transaction per request that commits only
with a successful answer, explicit transactions, the ledger and the queue
on the application's SQLAlchemy session (a handler's completion included),
``flask payq migrate|worker``, and the example application
(examples/flask_app/) end to end.

Every test runs on the fresh schema of ``payq_db``; what was committed is
read back through payq's own connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple, TypeVar

import pytest

flask = pytest.importorskip("flask")
sqlalchemy = pytest.importorskip("sqlalchemy")
psycopg = pytest.importorskip("psycopg")

import payq  # noqa: E402
from payq import Account, Money  # noqa: E402
from payq.testing import wait_until as payq_wait_until  # noqa: E402
from payq.contrib.flask import Payq  # noqa: E402
from payq.worker import Registry  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "flask_app"
WAIT_S_MAX = 60.0
POLL_S = 0.05
T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, diagnostics: Callable[[], str] = lambda: "") -> T:
    return payq_wait_until(condition, WAIT_S_MAX, interval_s=POLL_S, what=what, diagnostics=diagnostics)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


Accounts = Tuple[Account, Account]


@pytest.fixture
def accounts(payq_db: payq.Database) -> Accounts:
    """alice with 100.00 CNY and the provider's clearing account."""
    world = payq_db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = payq_db.ledger.account("user:alice", "CNY")
    clearing = payq_db.ledger.account("provider", "CNY", "system")
    payq_db.ledger.transfer(world, alice, "100.00", key="fund-alice")
    return alice, clearing


def make_app(payq_db: payq.Database, **config: Any) -> Tuple[Any, Payq]:
    app = flask.Flask(__name__)
    app.config.update(PAYQ_DSN=payq_db.dsn, PAYQ_SCHEMA=payq_db.schema, **config)
    return app, Payq(app)


@pytest.fixture
def shop(payq_db: payq.Database, accounts: Accounts) -> Tuple[Any, Payq]:
    """An application whose ``POST /pay`` debits alice and enqueues a payout
    in the request's transaction, then ends as the form says: ``ok``,
    ``raise``, ``abort`` (409 through Flask's abort), ``status`` (answers
    422) or ``commit-fails`` (a deferred constraint breaks at COMMIT)."""
    app, ext = make_app(payq_db)
    alice, clearing = accounts

    @app.post("/pay")
    def pay() -> Any:
        t = ext.request_transaction
        assert t is ext.request_transaction  # one per request
        t.ledger.transfer(alice, clearing, "12.34", key="order-1/debit")
        queued = t.enqueue("payout", {"order": "order-1"}, queue="payouts")
        end = flask.request.form["end"]
        if end == "raise":
            raise RuntimeError("the view failed after the debit")
        if end == "abort":
            flask.abort(409)
        if end == "status":
            return {"error": "no"}, 422
        if end == "commit-fails":
            t.execute("INSERT INTO @schema@.deferred_unique VALUES (1), (1)")
        return {"task_id": queued.task_id}

    return app, ext


def debited(payq_db: payq.Database, alice: Account) -> bool:
    """Whether alice's 12.34 debit and its payout task were committed;
    fails if one was and the other was not."""
    balance = payq_db.ledger.get_account(alice).balance
    tasks = payq_db.tasks.stats()
    assert (balance == cny("87.66")) == (tasks == {"payouts": {"pending": 1}}), (balance, tasks)
    return balance == cny("87.66")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("config, message", [
    ({"PAYQ_SCHEMA": "Shop-Payq"}, "PAYQ_SCHEMA must be a PostgreSQL schema name"),
    ({"PAYQ_SCHEMA": None}, "PAYQ_SCHEMA"),
    ({"PAYQ_DSN": ""}, "PAYQ_DSN must be a libpq connection string"),
    ({"PAYQ_DSN": 5432}, "PAYQ_DSN"),
    ({"PAYQ_QUEUES": []}, "PAYQ_QUEUES names no queue"),
    ({"PAYQ_QUEUES": ["a:b"]}, "not a whole number"),
    ({"PAYQ_HANDLERS": "shop tasks"}, "not a dotted module name"),
    ({"PAYQ_CONCURRENCY": "8"}, "PAYQ_CONCURRENCY must be an int"),
])
def test_bad_configuration_is_a_config_error(config: Any, message: str) -> None:
    app = flask.Flask(__name__)
    app.config.update(config)
    with pytest.raises(payq.ConfigError) as caught:
        Payq(app)
    assert message in str(caught.value)
    assert "payq" not in app.extensions


def test_configuration_is_per_application(payq_db: payq.Database) -> None:
    ext = Payq()
    first, second = flask.Flask("first"), flask.Flask("second")
    first.config.update(PAYQ_DSN=payq_db.dsn, PAYQ_SCHEMA=payq_db.schema)
    second.config.update(PAYQ_DSN=payq_db.dsn, PAYQ_SCHEMA="elsewhere")
    ext.init_app(first)
    ext.init_app(second)
    with first.app_context():
        assert ext.schema == payq_db.schema and ext.database.schema == payq_db.schema
    with second.app_context():
        assert ext.schema == "elsewhere"


def test_an_app_without_the_extension_is_told_so() -> None:
    ext = Payq()
    with flask.Flask(__name__).app_context():
        with pytest.raises(payq.InvalidArgument, match="init_app"):
            ext.database


# ---------------------------------------------------------------- the request's transaction


def test_a_successful_request_commits_its_ledger_and_queue_work(shop: Tuple[Any, Payq], payq_db: payq.Database,
                                                                accounts: Accounts) -> None:
    app, _ = shop
    response = app.test_client().post("/pay", data={"end": "ok"})
    assert response.status_code == 200
    assert debited(payq_db, accounts[0])
    task = payq_db.tasks.get(response.json["task_id"])
    assert (task.kind, task.queue, task.payload, task.state) == ("payout", "payouts", {"order": "order-1"}, "pending")


@pytest.mark.parametrize("end, status", [("raise", 500), ("abort", 409), ("status", 422)])
def test_a_failing_request_rolls_back(shop: Tuple[Any, Payq], payq_db: payq.Database, accounts: Accounts,
                                      end: str, status: int) -> None:
    app, _ = shop
    assert app.test_client().post("/pay", data={"end": end}).status_code == status
    assert not debited(payq_db, accounts[0])
    assert payq_db.ledger.find_transaction("order-1/debit") is None
    # The key was not used up: the same request succeeds now.
    assert app.test_client().post("/pay", data={"end": "ok"}).status_code == 200
    assert debited(payq_db, accounts[0])


def test_an_exception_propagated_in_testing_mode_rolls_back_too(shop: Tuple[Any, Payq], payq_db: payq.Database,
                                                                 accounts: Accounts) -> None:
    app, _ = shop
    app.config["TESTING"] = True  # the exception reaches the caller; teardown still ends the transaction
    with pytest.raises(RuntimeError, match="after the debit"):
        app.test_client().post("/pay", data={"end": "raise"})
    assert not debited(payq_db, accounts[0])


def test_a_failed_commit_is_a_500_not_a_success(shop: Tuple[Any, Payq], payq_db: payq.Database,
                                                accounts: Accounts) -> None:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.deferred_unique (id int, UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)")
    app, _ = shop
    response = app.test_client().post("/pay", data={"end": "commit-fails"})
    assert response.status_code == 500
    assert not debited(payq_db, accounts[0])


def test_explicit_transaction_outside_a_request(payq_db: payq.Database, accounts: Accounts) -> None:
    app, ext = make_app(payq_db)
    alice, clearing = accounts
    with app.app_context():
        with pytest.raises(payq.InvalidArgument, match="only available while handling a request"):
            ext.request_transaction
        with pytest.raises(RuntimeError):
            with ext.transaction() as t:
                t.ledger.transfer(alice, clearing, "12.34", key="order-1/debit")
                t.enqueue("payout", {}, queue="payouts")
                raise RuntimeError("rollback")
        assert not debited(payq_db, alice)
        with ext.transaction() as t:
            t.ledger.transfer(alice, clearing, "12.34", key="order-1/debit")
            t.enqueue("payout", {}, queue="payouts")
    assert debited(payq_db, alice)


# ---------------------------------------------------------------- the application's SQLAlchemy session


@pytest.fixture
def engine(payq_dsn: str, payq_db: payq.Database) -> Iterator[Any]:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.orders (v text PRIMARY KEY)")
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(payq_dsn))
    yield engine
    engine.dispose()


def committed_orders(payq_db: payq.Database) -> List[Optional[str]]:
    with payq_db.transaction() as t:
        return [row[0] for row in t.execute("SELECT v FROM @schema@.orders ORDER BY v")]


def test_session_commit_keeps_the_row_the_debit_and_the_task(payq_db: payq.Database, accounts: Accounts,
                                                             engine: Any) -> None:
    app, ext = make_app(payq_db)
    alice, clearing = accounts
    insert = text(f'INSERT INTO "{payq_db.schema}".orders (v) VALUES (:v)')
    with app.app_context():
        with pytest.raises(RuntimeError):
            with Session(engine) as session, session.begin():
                session.execute(insert, {"v": "order-1"})
                on = ext.on(session)
                on.ledger.transfer(alice, clearing, "12.34", key="order-1/debit")
                on.enqueue("payout", {"order": "order-1"}, queue="payouts")
                raise RuntimeError("rollback")
        assert committed_orders(payq_db) == [] and not debited(payq_db, alice)

        with Session(engine) as session, session.begin():
            session.execute(insert, {"v": "order-1"})
            on = ext.on(session)
            on.ledger.transfer(alice, clearing, "12.34", key="order-1/debit")
            [queued] = on.enqueue_many([payq.TaskRequest("payout", {"order": "order-1"}, queue="payouts")])
            assert on.tasks.get(queued.task_id).state == "pending"
            assert committed_orders(payq_db) == []
    assert committed_orders(payq_db) == ["order-1"] and debited(payq_db, alice)


def test_session_commit_wakes_workers(payq_db: payq.Database, payq_dsn: str, engine: Any) -> None:
    app, ext = make_app(payq_db)
    channel = f"payq_{payq_db.schema}"
    with psycopg.connect(payq_dsn, autocommit=True) as listener, app.app_context():
        listener.execute(f'LISTEN "{channel}"')
        with Session(engine) as session:
            with session.begin():
                ext.on(session).enqueue("payout", {}, queue="payouts")
                ext.on(session).enqueue("sms.send", {}, queue="sms")
            received = sorted(n.payload for n in listener.notifies(timeout=WAIT_S_MAX, stop_after=2))
    assert received == ["payouts", "sms"]


def test_a_handler_completes_its_task_on_the_application_session(payq_db: payq.Database, engine: Any) -> None:
    # The Flask form of Django's task.complete(executor(), ...): the task's
    # completion commits with the application's own rows, or neither does.
    app, ext = make_app(payq_db)
    insert = text(f'INSERT INTO "{payq_db.schema}".orders (v) VALUES (:v)')
    registry = Registry()
    attempts: List[int] = []

    @registry.handler("shop.ship", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    def ship(task: payq.TaskRun) -> None:
        attempts.append(task.attempt)
        with app.app_context(), Session(engine) as session, session.begin():
            session.execute(insert, {"v": f"shipped-{task.id}"})
            task.complete(ext.on(session).executor, {"shipped": True})
            if len(attempts) == 1:
                raise RuntimeError("the session rolls back: neither the row nor the completion stays")

    queued = payq_db.enqueue("shop.ship", {}, max_attempts=3)
    worker = payq.Worker(payq_db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=50))
    worker.start()
    try:
        wait_until(lambda: payq_db.tasks.get(queued.task_id).state in ("succeeded", "dead"), "the task to finish")
    finally:
        worker.stop()
    task = payq_db.tasks.get(queued.task_id)
    assert (task.state, task.result) == ("succeeded", {"shipped": True})
    assert [a.outcome for a in payq_db.tasks.attempts(queued.task_id)] == ["retry", "success"]
    assert committed_orders(payq_db) == [f"shipped-{queued.task_id}"]


# ---------------------------------------------------------------- flask payq ...


@pytest.fixture
def unmigrated_schema(payq_dsn: str) -> Iterator[str]:
    schema = f"t_flask_migrate_{os.getpid()}"
    yield schema
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_flask_payq_migrate_applies_migrations_once(payq_dsn: str, unmigrated_schema: str) -> None:
    app = flask.Flask(__name__)
    app.config.update(PAYQ_DSN=payq_dsn, PAYQ_SCHEMA=unmigrated_schema)
    Payq(app)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["payq", "migrate"])
    assert first.exit_code == 0, first.output
    assert f"to schema '{unmigrated_schema}'" in first.output and "applied migrations [1," in first.output
    second = runner.invoke(args=["payq", "migrate"])
    assert second.exit_code == 0 and f"schema '{unmigrated_schema}' is up to date" in second.output
    assert payq.connect(payq_dsn, schema=unmigrated_schema, migrate=False).schema_version() > 0


def test_flask_payq_migrate_reports_an_unreachable_database() -> None:
    app = flask.Flask(__name__)
    app.config.update(PAYQ_DSN="host=/nonexistent/socket/dir dbname=nope connect_timeout=2")
    Payq(app)
    result = app.test_cli_runner().invoke(args=["payq", "migrate"])
    # ConnectionLost is the DatabaseError for "nothing was sent, nothing applied".
    assert result.exit_code == 1 and "ConnectionLost: cannot connect to PostgreSQL" in result.output


def test_flask_payq_worker_needs_handlers(payq_db: payq.Database) -> None:
    app, _ = make_app(payq_db)
    result = app.test_cli_runner().invoke(args=["payq", "worker"])
    assert result.exit_code == 2 and "no handlers" in result.output
    result = app.test_cli_runner().invoke(args=["payq", "worker", "--handlers", "x.tasks", "--queues", ","])
    assert result.exit_code == 2 and "no usable queue name" in result.output


# ---------------------------------------------------------------- the example application


@pytest.fixture
def example_dsn(payq_dsn: str) -> Iterator[str]:
    """A database of its own for the example (its table lives in public)."""
    name = f"flaskshop_{os.getpid()}"
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield psycopg.conninfo.make_conninfo(payq_dsn, dbname=name)
    with psycopg.connect(payq_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def log_events(path: Path, event: str) -> List[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            out.append(record)
    return out


def test_example_app_pays_and_refunds_orders(example_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "PAYQ_DSN": example_dsn}
    env.pop("DATABASE_URL", None)

    def flask_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flask", "--app", "flaskshop", *args], cwd=EXAMPLE_DIR, env=env,
                              capture_output=True, text=True, timeout=300)

    migrated = flask_cli("payq", "migrate")
    assert migrated.returncode == 0 and "applied migrations" in migrated.stdout, migrated.stderr
    created = flask_cli("init-db")
    assert created.returncode == 0, created.stderr

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "flaskshop", "payq", "worker",
                                   "--poll-ms", "100", "--grace-s", "10"],
                                  cwd=EXAMPLE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def logs() -> str:
        return f"--- worker (exit {worker.poll()}):\n{log.read_text(errors='replace')[-3000:]}"

    sys.path.insert(0, str(EXAMPLE_DIR))
    shop_app = None
    try:
        from flaskshop import create_app

        shop_app = create_app({"PAYQ_DSN": example_dsn})
        client = shop_app.test_client()
        assert client.post("/wallets/alice/topup", data={"amount": "100.00"}).status_code == 200
        assert client.post("/wallets/alice/topup", data={"amount": "1.005"}).status_code == 400
        paid = client.post("/orders", data={"user": "alice", "amount": "12.34", "payout_to": "bank:merchant-1"})
        assert paid.status_code == 201 and paid.json["status"] == "pending", paid.json
        refused = client.post("/orders", data={"user": "alice", "amount": "5.00",
                                               "payout_to": "invalid:closed-account"})
        assert refused.status_code == 201, refused.json
        too_much = client.post("/orders", data={"user": "alice", "amount": "1000.00", "payout_to": "bank:m"})
        assert (too_much.status_code, too_much.json) == (409, {"error": "insufficient funds"})

        def status(order_id: int) -> str:
            return str(client.get(f"/orders/{order_id}").json["status"])

        wait_until(lambda: (status(paid.json["id"]), status(refused.json["id"])) == ("paid", "refunded")
                   or worker.poll() is not None, "the payout and the refund", logs)
        assert worker.poll() is None, logs()
        assert client.get(f"/orders/{paid.json['id']}").json["provider_ref"].startswith("sim-")
        assert client.get("/wallets/alice").json["balance"] == "87.66"  # 5.00 came back
        # The order refused for funds left no row (its id was drawn, then rolled back).
        assert client.get(f"/orders/{refused.json['id'] + 1}").status_code == 404

        db = payq.connect(example_dsn)
        assert db.tasks.get(paid.json["payout_task_id"]).state == "succeeded"
        assert db.tasks.get(refused.json["payout_task_id"]).state == "dead"
        assert db.ledger.audit().ok
        assert db.ledger.find_account("user:nobody", "CNY", "flaskshop") is None
        ready = log_events(log, "worker_ready")
        assert ready and ready[0]["kinds"] == ["flaskshop.order_refunded", "flaskshop.payout"], logs()

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
        assert log_events(log, "worker_stopped"), logs()
    finally:
        sys.path.remove(str(EXAMPLE_DIR))
        if shop_app is not None:
            shop_app.extensions["flaskshop"].engine.dispose()  # the shop's SQLAlchemy connections
        if worker.poll() is None:
            worker.kill()
            worker.wait()
