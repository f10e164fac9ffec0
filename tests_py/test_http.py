"""The built-in HTTP handler end to end: a real PostgreSQL, the C++ worker,
and payq.testing.FakeProvider (or a small server of the test's own where the
fake has no such behaviour: TLS, echoing headers, silence)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import payq
from payq import Money, Settle
from payq.testing import wait_until as payq_wait_until
from payq.testing.fake_provider import FakeProvider
from payq.worker import Registry, Worker
from test_worker_processes import Workers, query, wait_until

TOKEN = "tok_test_5ecr3t-value-0123"
WAIT_S_MAX = 60.0
POLL_S = 0.02
FINISHED = ("succeeded", "dead", "needs_review")
PAYOUT_ERROR_CODES = {"NOTENOUGH": "fail", "ACCOUNT_INVALID": "fail", "SYSTEM_ERROR": "unknown"}


# ---------------------------------------------------------------- helpers


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv("PROVIDER_TOKEN", TOKEN)
    with FakeProvider(token=TOKEN) as p:
        yield p


def payout_kind(registry: Registry, base: str, kind: str = "payout", **overrides: Any) -> None:
    """The payout kind of these tests, against the provider at ``base``;
    retries come back within milliseconds."""
    options: Dict[str, Any] = dict(
        url=base + "/payouts",
        headers={"Authorization": payq.secret_env("PROVIDER_TOKEN", prefix="Bearer ")},
        body='{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
             ' "currency": "{{payload.currency}}"}',
        timeout_ms=5_000,
        success_when={"return_code": "SUCCESS"},
        error_codes=PAYOUT_ERROR_CODES,
        status_url=base + "/payouts/{{task.idempotency_key}}",
        base_delay=timedelta(milliseconds=1),
        max_delay=timedelta(milliseconds=10),
    )
    options.update(overrides)
    registry.http(kind, **options)


def enqueue_payout(db: payq.Database, key: str, *, kind: str = "payout", account: str = "alipay:1",
                   amount_minor: int = 100, **options: Any) -> int:
    payload = {"account": account, "amount_minor": amount_minor, "currency": "CNY"}
    return db.enqueue(kind, payload, idempotency_key=key, **options).task_id


def finished(db: payq.Database, *task_ids: int) -> Callable[[], bool]:
    return lambda: all(db.tasks.get(i).state in FINISHED for i in task_ids)


def run_until(db: payq.Database, registry: Registry, predicate: Callable[[], bool], *, concurrency: int = 2,
              batch: int = 10, log: bool = False) -> Dict[str, Any]:
    """Run a worker until ``predicate`` holds (fails the test after
    WAIT_S_MAX); returns the worker's stats."""
    worker = Worker(db, registry=registry, concurrency=concurrency, batch=batch,
                    poll_interval=timedelta(milliseconds=50), maintenance_interval=timedelta(milliseconds=50),
                    log=log)
    worker.start()
    try:
        payq_wait_until(predicate, WAIT_S_MAX, interval_s=POLL_S, what="the tasks")
    finally:
        worker.stop()
    return worker.stats()


def outcomes(db: payq.Database, task_id: int) -> List[str]:
    return [a.outcome for a in db.tasks.attempts(task_id)]


def error_of(db: payq.Database, task_id: int) -> str:
    error = db.tasks.get(task_id).error
    assert error is not None, f"task {task_id} has no error"
    return error


class _Handler(BaseHTTPRequestHandler):
    """Answers every request with ``server.answer(handler) -> (status, body)``."""

    protocol_version = "HTTP/1.1"

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        status, body = self.server.answer(self)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def small_server(answer: Callable[[BaseHTTPRequestHandler], Tuple[int, Any]],
                 tls: Optional[Tuple[Path, Path]] = None) -> Iterator[Tuple[str, List[str]]]:
    """A provider of the test's own; yields its base URL and the paths it
    was asked for. With ``tls`` (certificate, key) it speaks HTTPS."""
    seen: List[str] = []

    def recording(handler: BaseHTTPRequestHandler) -> Tuple[int, Any]:
        seen.append(handler.path)
        return answer(handler)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.answer = recording  # type: ignore[attr-defined]
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- configuration


def test_bad_configuration_is_refused_when_the_kind_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYQ_NO_SUCH_TOKEN", raising=False)
    monkeypatch.setenv("PAYQ_SHORT_TOKEN", "short")
    registry = Registry()
    bad: List[Dict[str, Any]] = [
        dict(url="ftp://provider/payouts"),
        dict(url="https://provider/payouts", method="FETCH"),
        dict(url="https://provider/{{payload.id"),
        dict(url="https://provider/payouts", headers={"Authorization": payq.secret_env("PAYQ_NO_SUCH_TOKEN")}),
        dict(url="https://provider/payouts", headers={"Authorization": payq.secret_env("PAYQ_SHORT_TOKEN")}),
        dict(url="https://provider/payouts", follow_redirects=True),
        dict(url="https://provider/payouts", method="GET", body="{}"),
        dict(url="https://provider/payouts", timeout_ms=0),
        dict(url="https://provider/payouts", success_when={"return_code": "OK"}, error_codes={"X": "maybe"}),
        dict(url="https://provider/payouts", error_codes={"X": "fail"}),
        dict(url="https://provider/payouts", status_outcomes={(599, 500): "retry"}),
        dict(url="https://provider/payouts", ca_file="/nonexistent/ca.pem"),
        dict(url="https://provider/payouts", status_url="https://provider/s", status_check=lambda task: "applied"),
        dict(url="https://provider/payouts", response_body_bytes_max=10**9),
    ]
    for options in bad:
        with pytest.raises(payq.ConfigError):
            registry.http("payout", **options)
    assert registry.kinds() == []
    with pytest.raises(payq.ConfigError) as raised:
        registry.http("payout", url="https://provider/payouts",
                      headers={"Authorization": payq.secret_env("PAYQ_SHORT_TOKEN")})
    assert "PAYQ_SHORT_TOKEN" in str(raised.value) and "short" not in str(raised.value).replace("shorter", "")
    assert isinstance(raised.value, payq.Error)
    kind = registry.http("payout", url="https://provider/payouts")
    assert (kind.method, kind.url) == ("POST", "https://provider/payouts")
    with pytest.raises(payq.InvalidArgument):
        registry.http("payout", url="https://provider/payouts")


# ---------------------------------------------------------------- outcomes


def test_payout_is_paid_once_and_the_hold_captured(payq_db: payq.Database, provider: FakeProvider) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "10.00", key="fund")
    registry = Registry()
    payout_kind(registry, provider.url)
    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "1.00", key="wd-1/hold")
        task_id = t.enqueue("payout", {"account": "alipay:1", "amount_minor": 100, "currency": "CNY"},
                            idempotency_key="wd-1", settle=Settle.capture(hold, into=clearing)).task_id
    stats = run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    assert task.state == "succeeded"
    assert task.result["status"] == 200 and task.result["truncated"] is False
    assert task.result["body"]["return_code"] == "SUCCESS"
    assert provider.applied_count("wd-1") == 1 and provider.request_count("wd-1") == 1
    assert ledger.get_hold(hold.id).status == "captured"
    assert ledger.get_account(alice).balance == Money("9.00", "CNY")
    assert stats["async_started"] == 1


@pytest.mark.parametrize("fault, params, expected", [
    ("error_500", {}, ["unknown", "success"]),
    ("error_code", {"code": "SYSTEM_ERROR"}, ["unknown", "success"]),
    ("rate_limited", {"retry_after_s": 1}, ["retry", "success"]),
    ("drop_after_apply", {}, ["unknown", "success"]),
])
def test_provider_faults_are_retried_with_the_same_key(payq_db: payq.Database, provider: FakeProvider, fault: str,
                                                       params: Dict[str, Any], expected: List[str]) -> None:
    registry = Registry()
    payout_kind(registry, provider.url)
    provider.fault_next(fault, **params)
    task_id = enqueue_payout(payq_db, "wd-f")
    run_until(payq_db, registry, finished(payq_db, task_id))
    assert payq_db.tasks.get(task_id).state == "succeeded"
    assert outcomes(payq_db, task_id) == expected
    assert provider.applied_count("wd-f") == 1


@pytest.mark.parametrize("fault, account, code", [
    (None, "bad:closed", "ACCOUNT_INVALID"),
    ("insufficient_funds", "alipay:1", "NOTENOUGH"),
])
def test_definite_refusal_fails_and_releases_the_hold(payq_db: payq.Database, provider: FakeProvider,
                                                      fault: Any, account: str, code: str) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "10.00", key="fund")
    registry = Registry()
    payout_kind(registry, provider.url)
    if fault:
        provider.fault_next(fault)
    with payq_db.transaction() as t:
        hold = t.ledger.hold(alice, "1.00", key="wd-r/hold")
        task_id = t.enqueue("payout", {"account": account, "amount_minor": 100, "currency": "CNY"},
                            idempotency_key="wd-r", settle=Settle.capture(hold, into=clearing)).task_id
    run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    assert task.state == "dead" and outcomes(payq_db, task_id) == ["fail"]
    assert f'return_code is "{code}"' in error_of(payq_db, task_id)
    assert provider.applied_count("wd-r") == 0
    assert ledger.get_hold(hold.id).status == "released"
    assert ledger.get_account(alice).balance == Money("10.00", "CNY")


def test_same_key_with_another_body_is_a_conflict(payq_db: payq.Database, provider: FakeProvider) -> None:
    registry = Registry()
    payout_kind(registry, provider.url)
    first = enqueue_payout(payq_db, "wd-dup", amount_minor=100)
    run_until(payq_db, registry, finished(payq_db, first))
    second = enqueue_payout(payq_db, "wd-dup", amount_minor=999)
    run_until(payq_db, registry, finished(payq_db, second))
    assert payq_db.tasks.get(first).state == "succeeded"
    assert payq_db.tasks.get(second).state == "dead"
    assert "HTTP 409" in error_of(payq_db, second) and "IDEMPOTENCY_MISMATCH" in error_of(payq_db, second)
    assert provider.applied == {"wd-dup": 100}


def test_wrong_token_is_a_failure(payq_db: payq.Database, provider: FakeProvider,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TOKEN", "tok_wrong_but_long_enough")
    registry = Registry()
    payout_kind(registry, provider.url)
    task_id = enqueue_payout(payq_db, "wd-401")
    run_until(payq_db, registry, finished(payq_db, task_id))
    assert payq_db.tasks.get(task_id).state == "dead"
    assert "HTTP 401" in error_of(payq_db, task_id)
    assert "tok_wrong_but_long_enough" not in error_of(payq_db, task_id)


def test_refused_connection_is_retried_then_dead(payq_db: payq.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TOKEN", TOKEN)
    registry = Registry()
    payout_kind(registry, f"http://127.0.0.1:{closed_port()}")
    task_id = enqueue_payout(payq_db, "wd-refused", max_attempts=2)
    run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    assert task.state == "dead"  # definitely never sent: compensation may run
    assert outcomes(payq_db, task_id) == ["retry", "retry"]
    assert "connect failure" in error_of(payq_db, task_id) and "nothing was sent" in error_of(payq_db, task_id)


# ---------------------------------------------------------------- timeouts, status check


def test_timeout_after_sending_is_unknown_and_the_status_query_finds_it(payq_db: payq.Database,
                                                                        provider: FakeProvider) -> None:
    registry = Registry()
    payout_kind(registry, provider.url, timeout_ms=300)
    provider.fault_next("timeout_after_apply", delay_ms=5_000)
    task_id = enqueue_payout(payq_db, "wd-late")
    run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    assert task.state == "succeeded"
    assert outcomes(payq_db, task_id) == ["unknown", "success"]
    assert "timeout failure" in str(payq_db.tasks.attempts(task_id)[0].error)
    assert task.result["via"] == "status_query" and task.result["body"]["return_code"] == "SUCCESS"
    assert provider.applied_count("wd-late") == 1
    assert provider.request_count("wd-late") == 1  # the status query answered: no second POST


def test_slow_provider_times_out_and_is_still_paid_once(payq_db: payq.Database, provider: FakeProvider) -> None:
    registry = Registry()
    payout_kind(registry, provider.url, timeout_ms=300)
    provider.fault_next("slow", delay_ms=1_500)
    task_id = enqueue_payout(payq_db, "wd-slow")
    run_until(payq_db, registry, finished(payq_db, task_id))
    assert payq_db.tasks.get(task_id).state == "succeeded"
    assert outcomes(payq_db, task_id)[0] == "unknown"
    # Paid again (the status query found nothing yet) or found: never twice.
    wait_until_true(lambda: provider.requests_total >= 2)
    assert provider.applied_count("wd-slow") == 1


def wait_until_true(condition: Callable[[], bool]) -> None:
    payq_wait_until(condition, WAIT_S_MAX, interval_s=POLL_S, what="the condition")


def test_timeout_before_sending_is_retry(payq_db: payq.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TOKEN", TOKEN)
    # Accepts connections (the kernel does) but never answers the TLS
    # handshake: the call times out before the request could be sent.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        registry = Registry()
        payout_kind(registry, f"https://127.0.0.1:{silent.getsockname()[1]}", connect_timeout_ms=200)
        task_id = enqueue_payout(payq_db, "wd-silent", max_attempts=1)
        run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    assert outcomes(payq_db, task_id) == ["retry"]
    assert task.state == "dead"
    assert "timeout failure" in error_of(payq_db, task_id) and "nothing was sent" in error_of(payq_db, task_id)


def test_callable_status_check(payq_db: payq.Database, provider: FakeProvider) -> None:
    seen: List[payq.Task] = []

    def look_up(task: payq.Task) -> Any:
        seen.append(task)
        answer = provider.result(task.idempotency_key)
        return "not_found" if answer is None else ("applied", {"looked_up": answer["payout_id"]})

    registry = Registry()
    payout_kind(registry, provider.url, timeout_ms=300, status_url=None, status_check=look_up)
    provider.fault_next("timeout_after_apply", delay_ms=5_000)
    task_id = enqueue_payout(payq_db, "wd-call")
    run_until(payq_db, registry, finished(payq_db, task_id))
    task = payq_db.tasks.get(task_id)
    answer = provider.result("wd-call")
    assert answer is not None
    assert task.state == "succeeded" and task.result == {"looked_up": answer["payout_id"]}
    assert [t.idempotency_key for t in seen] == ["wd-call"] and seen[0].attempt == 2
    assert provider.applied_count("wd-call") == 1 and provider.request_count("wd-call") == 1


def test_status_check_answers_the_engine_cannot_use_are_unknown(payq_db: payq.Database) -> None:
    from payq import _core as core
    from payq.http import _status_adapter

    payq_db.enqueue("payout", {}, queue="checks")
    [claimed] = core.outbox_claim(payq_db._core, "checks", "test-worker", 1)
    assert _status_adapter(lambda task: "applied")(claimed) == ("applied", "null", "")
    assert _status_adapter(lambda task: ("applied", {"id": 7}))(claimed) == ("applied", '{"id": 7}', "")
    for answer in (None, 3, ("applied",), ("applied", 1, 2), "maybe", ("maybe", {})):
        finding, result_json, detail = _status_adapter(lambda task, a=answer: a)(claimed)
        assert (finding, result_json) == ("unknown", "null"), answer
        assert detail == f"the status check returned {answer!r}"

    def broken(task: payq.Task) -> Any:
        raise LookupError("status service down")

    assert _status_adapter(broken)(claimed) == ("unknown", "null", "LookupError: status service down")


# ---------------------------------------------------------------- redirects, huge bodies, TLS


def test_redirect_is_not_followed(payq_db: payq.Database, provider: FakeProvider) -> None:
    registry = Registry()
    payout_kind(registry, provider.url)
    with FakeProvider(token=TOKEN) as elsewhere:
        provider.redirect_payouts_to(elsewhere.url + "/payouts")
        task_id = enqueue_payout(payq_db, "wd-moved")
        run_until(payq_db, registry, finished(payq_db, task_id))
        assert elsewhere.requests_total == 0
    task = payq_db.tasks.get(task_id)
    assert task.state == "dead"
    assert "HTTP 307 redirect to http://" in error_of(payq_db, task_id)
    assert "(not followed)" in error_of(payq_db, task_id)


def test_huge_body_is_cut_and_proves_nothing(payq_db: payq.Database, provider: FakeProvider) -> None:
    registry = Registry()
    payout_kind(registry, provider.url)
    payout_kind(registry, provider.url, kind="payout.lenient", success_when=None, error_codes=None,
                response_body_bytes_max=1024)
    provider.fault_next("huge_body", size_bytes=8 * 1024 * 1024)
    strict = enqueue_payout(payq_db, "wd-huge")
    run_until(payq_db, registry, finished(payq_db, strict))
    assert outcomes(payq_db, strict) == ["unknown", "success"]  # cut body: success_when cannot be checked
    assert payq_db.tasks.get(strict).result["via"] == "status_query"
    assert provider.applied_count("wd-huge") == 1 and provider.request_count("wd-huge") == 1

    provider.fault_next("huge_body", size_bytes=8 * 1024 * 1024)
    lenient = enqueue_payout(payq_db, "wd-huge-2", kind="payout.lenient")
    run_until(payq_db, registry, finished(payq_db, lenient))
    result = payq_db.tasks.get(lenient).result
    assert payq_db.tasks.get(lenient).state == "succeeded"
    assert result["truncated"] is True and isinstance(result["body"], str) and len(result["body"]) == 1024


@pytest.fixture
def certificate(tmp_path: Path) -> Tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_is_verified_by_default_and_a_ca_file_is_trusted(payq_db: payq.Database,
                                                             certificate: Tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TOKEN", TOKEN)
    with small_server(lambda handler: (200, {"return_code": "SUCCESS"}), tls=certificate) as (url, seen):
        registry = Registry()
        payout_kind(registry, url, kind="tls.default")
        payout_kind(registry, url, kind="tls.trusted", ca_file=str(certificate[0]))
        refused = enqueue_payout(payq_db, "wd-tls-1", kind="tls.default", max_attempts=1)
        trusted = enqueue_payout(payq_db, "wd-tls-2", kind="tls.trusted")
        run_until(payq_db, registry, finished(payq_db, refused, trusted))
    assert outcomes(payq_db, refused) == ["retry"]
    error = error_of(payq_db, refused)
    assert "tls failure" in error and "nothing was sent" in error
    assert payq_db.tasks.get(trusted).state == "succeeded"
    assert seen == ["/payouts"]  # only the trusted call got through


# ---------------------------------------------------------------- secrets


def test_secrets_stay_out_of_logs_errors_and_results(payq_db: payq.Database, capfd: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TOKEN", TOKEN)

    def echo(handler: BaseHTTPRequestHandler) -> Tuple[int, Any]:
        # A careless provider: it echoes the credentials it was sent.
        status = 200 if handler.path.startswith("/ok") else 500
        return status, {"return_code": "SUCCESS" if status == 200 else "SYSTEM_ERROR",
                        "you_sent": handler.headers.get("Authorization")}

    with small_server(echo) as (url, _):
        registry = Registry()
        payout_kind(registry, url, kind="echo.fail", url=url + "/fail", status_url=None)
        payout_kind(registry, url, kind="echo.ok", url=url + "/ok", status_url=None)
        failing = enqueue_payout(payq_db, "wd-echo-1", kind="echo.fail", max_attempts=2)
        paying = enqueue_payout(payq_db, "wd-echo-2", kind="echo.ok")
        run_until(payq_db, registry, finished(payq_db, failing, paying), log=True)
    logs = capfd.readouterr().err
    assert "task_done" in logs
    stored = query(payq_db, "SELECT t::text FROM @schema@.task t UNION ALL SELECT a::text FROM @schema@.task_attempt a")
    stored_text = "\n".join(row[0] for row in stored)
    assert TOKEN not in logs and TOKEN not in stored_text
    assert payq_db.tasks.get(failing).state == "needs_review"
    assert "Bearer [redacted]" in error_of(payq_db, failing)
    assert payq_db.tasks.get(paying).result["body"]["you_sent"] == "Bearer [redacted]"


# ---------------------------------------------------------------- paid exactly once, under faults


def test_every_payout_is_paid_exactly_once_under_random_faults(payq_db: payq.Database,
                                                               provider: FakeProvider) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("clearing", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    registry = Registry()
    payout_kind(registry, provider.url, timeout_ms=400, rate_limited_pause_ms=50)
    provider.fault_defaults("timeout_after_apply", delay_ms=1_000)
    provider.fault_defaults("slow", delay_ms=1_000)
    provider.fault_defaults("rate_limited", retry_after_s=0)
    provider.fault_rates(error_500=0.15, timeout_after_apply=0.1, drop_after_apply=0.1, slow=0.05,
                         rate_limited=0.05, huge_body=0.05)
    payout_count = 30
    holds = []
    with payq_db.transaction() as t:
        for n in range(payout_count):
            hold = t.ledger.hold(alice, "1.00", key=f"wd-{n}/hold")
            t.enqueue("payout", {"account": f"alipay:{n}", "amount_minor": 100, "currency": "CNY"},
                      idempotency_key=f"wd-{n}", max_attempts=50, settle=Settle.capture(hold, into=clearing))
            holds.append(hold)
    run_until(payq_db, registry, lambda: all(ledger.get_hold(h.id).status != "active" for h in holds),
              concurrency=2, batch=8)
    assert all(ledger.get_hold(h.id).status == "captured" for h in holds)
    assert all(provider.applied_count(f"wd-{n}") == 1 for n in range(payout_count))
    assert ledger.get_account(alice).balance == Money("70.00", "CNY")
    assert ledger.audit().ok


# ---------------------------------------------------------------- back-pressure across processes


@pytest.fixture
def http_workers(payq_db: payq.Database, provider: FakeProvider, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Workers]:
    monkeypatch.setenv("WORKERAPP_PROVIDER_URL", provider.url)
    monkeypatch.setenv("WORKERAPP_PROVIDER_TOKEN", TOKEN)
    pool = Workers(payq_db, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def test_rate_limit_pauses_the_queue_for_every_worker_process(payq_db: payq.Database, provider: FakeProvider,
                                                              http_workers: Workers) -> None:
    workers = http_workers.start_and_wait(2, "--app", "workerapp.http_handlers", queues="payouts", concurrency=2)
    provider.fault_next("rate_limited", retry_after_s=5)

    def payout(n: int) -> int:
        return payq_db.enqueue("http.payout", {"account": f"alipay:{n}", "amount_minor": 100, "currency": "CNY"},
                               queue="payouts", idempotency_key=f"bp-{n}").task_id

    first = payout(0)
    wait_until(lambda: outcomes(payq_db, first) == ["retry"], "the 429", http_workers, workers)
    later = [payout(n) for n in range(1, 11)]
    # While the queue is paused, neither worker may claim one of them:
    # checked in one snapshot together with the pause itself.
    snapshot_sql = """
        SELECT (SELECT paused_until > now() FROM @schema@.queue WHERE name = 'payouts'),
               (SELECT count(*) FROM @schema@.task WHERE id = ANY($1::bigint[]) AND attempt > 0)"""
    ids_text = "{" + ",".join(str(i) for i in later) + "}"
    # The pause (5 s) is committed before the 429's attempt is recorded.
    assert query(payq_db, snapshot_sql, [ids_text])[0][0] == "t", "the 429 did not pause the queue"
    observe_until = time.monotonic() + 1.0  # ten of the workers' poll intervals
    while time.monotonic() < observe_until:
        paused, claimed = query(payq_db, snapshot_sql, [ids_text])[0]
        if paused != "t":
            break
        assert claimed == "0", "a worker claimed from a paused queue"
        time.sleep(POLL_S)
    ids = [first, *later]
    wait_until(lambda: all(payq_db.tasks.get(i).state == "succeeded" for i in ids), "every payout", http_workers,
               workers)
    assert all(provider.applied_count(f"bp-{n}") == 1 for n in range(11))
    assert sum(len(w.events("queue_paused")) for w in workers) == 1
    assert all(TOKEN not in w.stderr_path.read_text() for w in workers)
