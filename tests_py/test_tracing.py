"""Tracing (payq.tracing) end to end: OpenTelemetry's in-memory exporter, a
real PostgreSQL, the C++ worker, and a local HTTP server for the built-in
HTTP handler's traceparent header."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="payq[otel] tests need opentelemetry-sdk")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import payq  # noqa: E402
from payq import Settle  # noqa: E402
from payq import tracing as payq_tracing  # noqa: E402
from payq.testing import wait_until  # noqa: E402
from payq.worker import Registry, Worker  # noqa: E402
from test_http import small_server  # noqa: E402

WAIT_S_MAX = 60.0
# Payload values that must never reach a span.
SECRET_ACCOUNT = "acct-6222-0213-9876-SECRET"
SECRET_NAME = "Zhang San the payee"


@pytest.fixture
def spans() -> Iterator[Tuple[InMemorySpanExporter, trace.Tracer]]:
    """payq traced into an in-memory exporter (payq's own provider, so no
    global state is touched); yields the exporter and an application tracer."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    payq_tracing.enable(provider)
    try:
        yield exporter, provider.get_tracer("the application")
    finally:
        payq_tracing.disable()
        provider.shutdown()


def run_until_finished(db: payq.Database, registry: Registry, *task_ids: int) -> None:
    worker = Worker(db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=20),
                    maintenance=False, log=False)
    worker.start()
    try:
        wait_until(lambda: all(db.tasks.get(i).state in ("succeeded", "dead", "needs_review") for i in task_ids),
                   WAIT_S_MAX, interval_s=0.02, what="the tasks")
    finally:
        worker.stop()


def named(finished: Sequence[ReadableSpan], name: str) -> List[ReadableSpan]:
    return [s for s in finished if s.name == name]


def one(finished: Sequence[ReadableSpan], name: str, **attributes: Any) -> ReadableSpan:
    found = [s for s in named(finished, name) if all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, f"{name} {attributes}: {[(s.name, dict(s.attributes)) for s in finished]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def no_payload_values(finished: Sequence[ReadableSpan], *values: str) -> None:
    for span in finished:
        for key, value in (span.attributes or {}).items():
            for secret in values:
                assert secret not in str(value), f"{span.name} attribute {key} carries a payload value"
        for event in span.events:
            for key, value in (event.attributes or {}).items():
                for secret in values:
                    assert secret not in str(value), f"{span.name} event {event.name} carries a payload value"


def test_one_trace_from_the_request_through_every_attempt_to_the_settlement(
        payq_db: payq.Database, spans: Tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    exporter, app = spans
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:1", "CNY")
    ledger.transfer(world, wallet, "100.00", key="fund-1")
    registry = Registry()

    @registry.handler("payout", base_delay=timedelta(milliseconds=1), max_delay=timedelta(milliseconds=5))
    def payout(task: payq.TaskRun) -> Dict[str, Any]:
        with app.start_as_current_span("provider.send"):
            if task.attempt == 1:
                raise payq.Retry("provider busy")
        return {"paid": True}

    with app.start_as_current_span("POST /withdrawals") as request:
        with payq_db.transaction() as t:
            hold = t.ledger.hold(wallet, "10.00", key="wd-1")
            task_id = t.enqueue("payout", {"account": SECRET_ACCOUNT, "name": SECRET_NAME},
                                settle=Settle.capture(hold, into=clearing)).task_id
    run_until_finished(payq_db, registry, task_id)
    assert payq_db.tasks.get(task_id).state == "succeeded"

    finished = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    enqueue = one(finished, "payq.enqueue", **{"payq.task.id": task_id})
    assert parent_of(enqueue) == request.get_span_context().span_id
    assert enqueue.attributes["payq.queue"] == "default" and enqueue.attributes["payq.task.kind"] == "payout"
    # The hold, made by application code, joins the request's trace.
    hold_span = one(finished, "payq.ledger.hold")
    assert parent_of(hold_span) == request.get_span_context().span_id
    assert hold_span.attributes["payq.ledger.currency"] == "CNY"

    first = one(finished, "payq.attempt", **{"payq.task.id": task_id, "payq.task.attempt": 1})
    second = one(finished, "payq.attempt", **{"payq.task.id": task_id, "payq.task.attempt": 2})
    for attempt in (first, second):
        assert attempt.context.trace_id == trace_id
        assert parent_of(attempt) == enqueue.context.span_id
        assert attempt.kind == trace.SpanKind.CONSUMER
        assert attempt.attributes["payq.task.kind"] == "payout"
        # Each attempt links to the claim that took it.
        claims = {c.context.span_id for c in named(finished, "payq.claim")}
        assert [link.context.span_id for link in attempt.links][0] in claims
    assert first.attributes["payq.attempt.outcome"] == "retry"
    assert first.attributes["payq.task.state"] == "pending"
    assert first.status.status_code == trace.StatusCode.ERROR
    assert second.attributes["payq.attempt.outcome"] == "success"
    assert second.attributes["payq.task.state"] == "succeeded"

    # The handler's own spans are children of their attempt.
    sends = named(finished, "provider.send")
    assert sorted(parent_of(s) for s in sends) == sorted([first.context.span_id, second.context.span_id])
    # The settlement runs under the successful attempt; its capture under it.
    settle = one(finished, "payq.settle")
    assert parent_of(settle) == second.context.span_id
    assert settle.attributes["payq.settle.side"] == "success"
    capture = one(finished, "payq.ledger.capture")
    assert parent_of(capture) == settle.context.span_id
    assert capture.attributes["payq.ledger.currency"] == "CNY"
    assert capture.context.trace_id == trace_id

    no_payload_values(finished, SECRET_ACCOUNT, SECRET_NAME, "Zhang")


def test_an_async_handlers_spans_are_children_of_its_attempt(
        payq_db: payq.Database, spans: Tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    exporter, app = spans
    registry = Registry()

    @registry.handler("notify")
    async def notify(task: payq.TaskRun) -> Dict[str, Any]:
        with app.start_as_current_span("provider.send"):
            await asyncio.sleep(0)
        return {"sent": True}

    task_id = payq_db.enqueue("notify", {"to": SECRET_NAME}).task_id
    run_until_finished(payq_db, registry, task_id)
    finished = exporter.get_finished_spans()
    attempt = one(finished, "payq.attempt", **{"payq.task.id": task_id})
    assert attempt.attributes["payq.attempt.outcome"] == "success"
    assert parent_of(one(finished, "provider.send")) == attempt.context.span_id
    no_payload_values(finished, SECRET_NAME)


def header_recorder() -> Tuple[List[Dict[str, str]], Any]:
    seen: List[Dict[str, str]] = []

    def answer(handler: BaseHTTPRequestHandler) -> Tuple[int, Any]:
        seen.append({k.lower(): v for k, v in handler.headers.items()})
        return 200, {"return_code": "SUCCESS"}

    return seen, answer


def http_kinds(registry: Registry, base: str) -> None:
    body = '{"account": "{{payload.account}}"}'
    registry.http("pay.traced", url=base + "/pay", body=body, success_when={"return_code": "SUCCESS"},
                  send_traceparent=True)
    registry.http("pay.plain", url=base + "/pay", body=body, success_when={"return_code": "SUCCESS"})


def test_http_kind_sends_traceparent_to_the_provider_only_when_asked(
        payq_db: payq.Database, spans: Tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    exporter, app = spans
    seen, answer = header_recorder()
    with small_server(answer) as (base, _):
        registry = Registry()
        http_kinds(registry, base)
        with app.start_as_current_span("POST /payouts") as request:
            traced = payq_db.enqueue("pay.traced", {"account": SECRET_ACCOUNT}).task_id
        with app.start_as_current_span("POST /other"):
            plain = payq_db.enqueue("pay.plain", {"account": SECRET_ACCOUNT}).task_id
        run_until_finished(payq_db, registry, traced, plain)
    assert [payq_db.tasks.get(i).state for i in (traced, plain)] == ["succeeded", "succeeded"]
    assert len(seen) == 2
    sent = [h for h in seen if "traceparent" in h]
    assert len(sent) == 1, "only the kind that asks for it sends a traceparent"

    finished = exporter.get_finished_spans()
    attempt = one(finished, "payq.attempt", **{"payq.task.id": traced})
    call = [s for s in named(finished, "payq.http") if parent_of(s) == attempt.context.span_id]
    assert len(call) == 1
    assert call[0].kind == trace.SpanKind.CLIENT
    assert call[0].attributes["http.response.status_code"] == 200
    assert call[0].attributes["url.template"] == base + "/pay"
    # The provider continues the trace of the request, under the call's span.
    _, trace_hex, span_hex, _ = sent[0]["traceparent"].split("-")
    assert int(trace_hex, 16) == request.get_span_context().trace_id
    assert int(span_hex, 16) == call[0].context.span_id
    no_payload_values(finished, SECRET_ACCOUNT)


def test_send_traceparent_is_refused_with_a_traceparent_header_of_its_own() -> None:
    registry = Registry()
    for headers in ({"traceparent": "00-x"}, {"TraceState": "a=b"}):
        with pytest.raises(payq.ConfigError, match="send_traceparent"):
            registry.http("pay", url="http://127.0.0.1:9/pay", headers=headers, send_traceparent=True)
    with pytest.raises(payq.ConfigError, match="send_traceparent"):
        registry.http("pay", url="http://127.0.0.1:9/pay", send_traceparent="yes")  # type: ignore[arg-type]
    registry.http("pay", url="http://127.0.0.1:9/pay", headers={"traceparent": "00-x"})  # without it: as given


def test_without_tracing_the_enqueuers_context_still_reaches_the_provider(payq_db: payq.Database) -> None:
    # No tracer provider, no payq tracing: a context the application made
    # current (passed through from its caller) is stored and sent as it is.
    assert not payq_tracing.enabled()
    incoming = trace.SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                                 is_remote=True, trace_flags=trace.TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(incoming)))
    try:
        traced = payq_db.enqueue("pay.traced", {"account": "x"}).task_id
    finally:
        otel_context.detach(token)
    untraced = payq_db.enqueue("pay.traced", {"account": "y"}).task_id
    seen, answer = header_recorder()
    with small_server(answer) as (base, _):
        registry = Registry()
        http_kinds(registry, base)
        run_until_finished(payq_db, registry, traced, untraced)
    headers = sorted((h.get("traceparent", "") for h in seen), reverse=True)
    assert headers == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""]


def test_enqueue_on_the_applications_connection_carries_the_trace(
        payq_db: payq.Database, spans: Tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    psycopg = pytest.importorskip("psycopg")
    exporter, app = spans
    with psycopg.connect(payq_db.dsn) as conn:
        with app.start_as_current_span("POST /orders") as request:
            with conn.transaction():
                task_id = payq.outbox.enqueue(conn, "order.ship", {"order": 7}, schema=payq_db.schema).task_id
    stored = payq_db.tasks.get(task_id).traceparent
    assert stored is not None
    assert int(stored.split("-")[1], 16) == request.get_span_context().trace_id
    enqueue = one(exporter.get_finished_spans(), "payq.enqueue")
    assert int(stored.split("-")[2], 16) == enqueue.context.span_id


def test_async_enqueue_carries_the_trace_of_the_awaiting_request(
        payq_db: payq.Database, spans: Tuple[InMemorySpanExporter, trace.Tracer]) -> None:
    exporter, app = spans

    async def withdraw() -> Tuple[int, int]:
        db = await payq.aio.connect(payq_db.dsn, schema=payq_db.schema, migrate=False, threads=2)
        try:
            with app.start_as_current_span("POST /withdrawals") as request:
                async with db.transaction() as t:
                    task_id = (await t.enqueue("payout", {"account": SECRET_ACCOUNT})).task_id
            return task_id, request.get_span_context().trace_id
        finally:
            await db.close()

    task_id, trace_id = asyncio.run(withdraw())
    stored = payq_tracing_core_task(payq_db, task_id)
    assert stored is not None and int(stored.split("-")[1], 16) == trace_id
    enqueue = one(exporter.get_finished_spans(), "payq.enqueue")
    assert enqueue.context.trace_id == trace_id


def payq_tracing_core_task(db: payq.Database, task_id: int) -> Optional[str]:
    """The traceparent stored with a task, as the worker reads it."""
    with db.transaction() as t:
        columns, rows = t._tx.execute(
            f"SELECT trace_context->>'traceparent' FROM {db.schema}.task WHERE id = $1", [str(task_id)])
    return rows[0][0]


def test_a_global_tracer_provider_is_picked_up_by_itself(payq_db: payq.Database) -> None:
    # A fresh interpreter: the global provider can be set once per process.
    script = textwrap.dedent(f"""
        from datetime import timedelta
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import payq
        from payq.testing import wait_until

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        db = payq.connect({payq_db.dsn!r}, schema={payq_db.schema!r}, migrate=False)
        registry = payq.worker.Registry()
        registry.handler("job")(lambda task: None)
        with trace.get_tracer("app").start_as_current_span("request") as request:
            task_id = db.enqueue("job", {{}}).task_id
        worker = payq.Worker(db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=20),
                             maintenance=False, log=False)
        worker.start()
        try:
            wait_until(lambda: db.tasks.get(task_id).state == "succeeded", 60, interval_s=0.02, what="the task")
        finally:
            worker.stop()
        traced = {{s.name for s in exporter.get_finished_spans()
                   if s.context.trace_id == request.get_span_context().trace_id}}
        print(" ".join(sorted(traced)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["payq.attempt", "payq.enqueue", "request"]


def test_payq_works_without_opentelemetry(payq_db: payq.Database) -> None:
    # A fresh interpreter in which no opentelemetry module can be imported.
    script = textwrap.dedent(f"""
        import sys
        from datetime import timedelta

        class Hidden:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError("hidden by the test: " + name)
                return None

        sys.meta_path.insert(0, Hidden())
        import payq
        from payq import tracing
        from payq.testing import wait_until

        assert not tracing.available() and not tracing.enabled()
        try:
            tracing.enable()
        except payq.ConfigError:
            pass
        else:
            raise AssertionError("enable() without OpenTelemetry must raise ConfigError")
        db = payq.connect({payq_db.dsn!r}, schema={payq_db.schema!r}, migrate=False)
        registry = payq.worker.Registry()
        registry.handler("job")(lambda task: {{"done": task.payload["n"]}})
        task_id = db.enqueue("job", {{"n": 1}}).task_id
        worker = payq.Worker(db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=20),
                             maintenance=False, log=False)
        worker.start()
        try:
            wait_until(lambda: db.tasks.get(task_id).state == "succeeded", 60, interval_s=0.02, what="the task")
        finally:
            worker.stop()
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
        print("ok", task_id, db.tasks.get(task_id).result["done"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    word, task_id, result = done.stdout.split()
    assert (word, result) == ("ok", "1")
    assert payq_tracing_core_task(payq_db, int(task_id)) is None
