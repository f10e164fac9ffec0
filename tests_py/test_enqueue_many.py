"""enqueue_many at the boundary: on an application's connection a large
batch goes through the driver's COPY (psycopg 3, psycopg2, and Django and
SQLAlchemy over them) and stores what the statement path stores; a bad
request is named by its index and nothing is written. The C++ tests
(tests_cpp/outbox_enqueue_copy_test.cpp) own the rest of the logic."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

import payq
import payq.appconn
from payq import TaskRequest
from payq._native import core

from appconn_support import APP_KINDS, app_open
from appconn_support import django_order_model, engine_psycopg, engine_psycopg2  # noqa: F401 (fixtures)

psycopg = pytest.importorskip("psycopg")

BATCH = core.TASK_BATCH_COPY_COUNT_MIN * 2


@pytest.fixture(params=APP_KINDS)
def app(request: Any, payq_dsn: str, payq_db: payq.Database) -> Iterator[Any]:
    with payq_db.transaction() as t:
        t.execute("CREATE TABLE @schema@.app_row (v text)")
    application = app_open(request, request.param, payq_dsn, payq_db.schema, "app_row")
    yield application
    application.close()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The COPY statements the executors send, in order."""
    sent: List[str] = []
    make = payq.appconn._copy_in

    def counting(cursor: Any) -> Optional[Callable[[str, bytes], None]]:
        copy_in = make(cursor)
        if copy_in is None:
            return None

        def counted(sql: str, data: bytes) -> None:
            sent.append(sql)
            copy_in(sql, data)
        return counted

    monkeypatch.setattr(payq.appconn, "_copy_in", counting)
    return sent


def requests(tag: str, n: int = BATCH) -> List[TaskRequest]:
    return [
        TaskRequest(
            "copy.kind",
            {"i": i, "text": "tab\there\nline \\ back \"q\" é 中", "list": [1, 2.5, None, True]},
            queue=f"copy-{tag}",
            priority=i % 5 - 2,
            delay=timedelta(milliseconds=1500 * (i % 3)),
            max_attempts=1 + i % 7,
            timeout=timedelta(seconds=1 + i % 4),
            partition_key=f"customer {i % 3}" if i % 2 else None,
            idempotency_key=f"chosen-{tag}-{i}" if i % 4 == 1 else None,
            amount=payq.Money(f"{1 + i}.25", "CNY") if i % 5 == 2 else None,
            held=i % 6 == 1,
            settle=payq.Settle.followup_only("undo", {"i": i}) if i % 11 == 3 else None,
        )
        for i in range(n)
    ]


def stored(db: payq.Database, ids: List[int]) -> List[Tuple[Any, ...]]:
    """Every stored column that does not differ by nature (id, time, the tag in queue and key)."""
    with db.transaction() as t:
        return [tuple(t.execute(
            "SELECT kind, payload::text, state, priority, run_at - created_at, attempt_max, timeout_ms, "
            "partition_key, CASE WHEN idempotency_key = 'task:' || id THEN '(default)' "
            "ELSE regexp_replace(idempotency_key, '^chosen-[a-z]+-', 'chosen-') END, "
            "amount_minor, currency, followup::text FROM @schema@.task WHERE id = $1", [str(task_id)])[0])
            for task_id in ids]


def test_large_batch_on_application_connection_is_copied(app: Any, payq_db: payq.Database,
                                                         copies: List[str]) -> None:
    with app.transaction():
        results = payq.outbox.enqueue_many(app.handle, requests("app"), schema=payq_db.schema)
    assert len(copies) == 1 and copies[0].startswith("COPY ")
    assert all(r.created for r in results)
    ids = [r.task_id for r in results]
    assert ids == sorted(ids)
    # The same requests through the statement (a batch too small to copy, in pieces).
    statement_ids: List[int] = []
    with payq_db.transaction() as t:
        batch = requests("statement")
        for start in range(0, len(batch), core.TASK_BATCH_COPY_COUNT_MIN - 1):
            piece = batch[start:start + core.TASK_BATCH_COPY_COUNT_MIN - 1]
            statement_ids += [r.task_id for r in t.enqueue_many(piece)]
    assert len(copies) == 1
    assert stored(payq_db, ids) == stored(payq_db, statement_ids)


def test_rolled_back_copy_leaves_nothing(payq_dsn: str, payq_db: payq.Database, copies: List[str]) -> None:
    with psycopg.connect(payq_dsn) as connection:
        payq.outbox.enqueue_many(connection, requests("gone"), schema=payq_db.schema)
        connection.rollback()
        # The connection goes on as usual after the COPY.
        assert connection.execute("SELECT 1").fetchone() == (1,)
    assert len(copies) == 1
    assert payq_db.tasks.list(queue="copy-gone") == []


@pytest.mark.parametrize("target", ["psycopg", "payq"])
def test_bad_request_names_its_index_and_writes_nothing(target: str, payq_dsn: str,
                                                        payq_db: payq.Database) -> None:
    def enqueue(batch: List[TaskRequest]) -> None:
        if target == "payq":
            payq_db.enqueue_many(batch)
            return
        with psycopg.connect(payq_dsn) as connection:
            payq.outbox.enqueue_many(connection, batch, schema=payq_db.schema)
            connection.commit()

    batch = requests("bad", 200)
    batch[70] = TaskRequest("copy.kind", {"not json": object()}, queue="copy-bad")
    with pytest.raises(payq.InvalidArgument, match="task 70 of the batch: "):
        enqueue(batch)
    batch = requests("bad", 200)
    batch[101] = TaskRequest("copy.kind", {}, queue="copy-bad", amount=payq.Money(5, "CNY"),
                             max_attempts=0)
    with pytest.raises(payq.InvalidArgument, match="task 101 of the batch: attempt_max"):
        enqueue(batch)
    batch = requests("bad", 200)
    batch[3] = TaskRequest("copy.kind", {}, queue="copy-bad", priority=40000)
    with pytest.raises(payq.InvalidArgument, match="task 3 of the batch: priority"):
        enqueue(batch)
    assert payq_db.tasks.list(queue="copy-bad") == []
