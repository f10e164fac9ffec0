"""The fake payout provider, over real HTTP on loopback: its contract
(idempotency per key, stored answers, errors), every fault kind, the
callbacks it sends, and its counters."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest

from payq.testing import FakeProvider, wait_until
from payq.testing import fake_provider
from payq.testing.fake_provider import CALLBACK_ATTEMPT_COUNT_MAX, CALLBACK_SHUFFLE_BUFFER_MAX, FAULT_KINDS

WAIT_S_MAX = 10.0
SECRET = "test-secret"


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    raw: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.raw)


def call(provider: FakeProvider, method: str, path: str, body: object = None, *,
         headers: Optional[Mapping[str, str]] = None, timeout_s: float = WAIT_S_MAX) -> Reply:
    """One request on a new connection (as a client that does not reuse them)."""
    connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=timeout_s)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def pay(provider: FakeProvider, key: Optional[str], account: str = "alipay:1", amount_minor: int = 500,
        currency: str = "CNY", *, headers: Optional[Mapping[str, str]] = None,
        timeout_s: float = WAIT_S_MAX) -> Reply:
    """POST /payouts with idempotency key ``key`` (None: without one)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    body = {"account": account, "amount_minor": amount_minor, "currency": currency}
    return call(provider, "POST", "/payouts", body, headers=sent, timeout_s=timeout_s)


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    wait_until(predicate, WAIT_S_MAX, interval_s=0.005, what=what)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(balance_minor=100_000, callback_secret=SECRET) as p:
        yield p


# ---------------------------------------------------------------- the contract


def test_a_key_is_applied_once_and_retries_get_the_stored_answer(provider):
    first = pay(provider, "wd-1", amount_minor=1_234)
    assert first.status == 200 and first.headers["content-type"] == "application/json"
    assert first.json == {"status": "SUCCESS", "return_code": "SUCCESS", "payout_id": "po_1", "key": "wd-1",
                          "amount_minor": 1_234, "currency": "CNY"}
    again = pay(provider, "wd-1", amount_minor=1_234)
    assert again.status == 200 and again.raw == first.raw
    assert provider.applied_count("wd-1") == 1
    assert provider.request_count("wd-1") == 2
    assert provider.applied == {"wd-1": 1_234}
    assert provider.balance_minor == 100_000 - 1_234
    assert call(provider, "GET", "/balance").json == {"balance_minor": 100_000 - 1_234}
    stored = call(provider, "GET", "/payouts/wd-1")
    assert stored.status == 200 and stored.json == first.json
    assert provider.result("wd-1") == first.json
    second = pay(provider, "wd-2", amount_minor=1)
    assert second.json["payout_id"] == "po_2"


def test_the_same_key_with_another_body_is_a_409_and_changes_nothing(provider):
    assert pay(provider, "wd-1", amount_minor=500).status == 200
    for reply in (pay(provider, "wd-1", amount_minor=501), pay(provider, "wd-1", account="alipay:2"),
                  pay(provider, "wd-1", currency="USD")):
        assert reply.status == 409 and reply.json["return_code"] == "IDEMPOTENCY_MISMATCH"
    assert provider.applied == {"wd-1": 500}
    assert provider.request_count("wd-1") == 4


def test_a_key_never_seen_is_not_found(provider):
    reply = call(provider, "GET", "/payouts/nobody")
    assert reply.status == 404 and reply.json == {"status": "NOT_FOUND", "return_code": "NOT_FOUND"}
    assert call(provider, "GET", "/no/such/path").status == 404


def test_keys_are_url_decoded_in_get(provider):
    pay(provider, "wd/7 x")
    assert call(provider, "GET", "/payouts/wd%2F7%20x").json["key"] == "wd/7 x"


def test_a_request_without_a_key_or_with_a_bad_body_is_a_400(provider):
    reply = pay(provider, None)
    assert reply.status == 400 and reply.json == {"return_code": "MISSING_KEY"}
    bad_bodies = [b"not json", b"[]", {"account": "a"}, {"account": "a", "amount_minor": "5", "currency": "CNY"},
                  {"account": "a", "amount_minor": True, "currency": "CNY"},
                  {"account": "a", "amount_minor": 0, "currency": "CNY"},
                  {"account": "", "amount_minor": 5, "currency": "CNY"},
                  {"account": "a", "amount_minor": 5.0, "currency": "CNY"}]
    for body in bad_bodies:
        reply = call(provider, "POST", "/payouts", body, headers={"Idempotency-Key": "k"})
        assert reply.status == 400 and reply.json["return_code"] == "BAD_REQUEST", body
    assert provider.applied == {} and provider.result("k") is None
    assert provider.request_count("k") == len(bad_bodies)


def test_a_bad_account_is_a_recorded_definite_failure(provider):
    reply = pay(provider, "wd-bad", account="bad:closed")
    assert reply.status == 200
    assert reply.json["status"] == "FAILED" and reply.json["return_code"] == "ACCOUNT_INVALID"
    assert pay(provider, "wd-bad", account="bad:closed").raw == reply.raw
    assert call(provider, "GET", "/payouts/wd-bad").json == reply.json
    assert provider.applied_count("wd-bad") == 0 and provider.balance_minor == 100_000


def test_more_than_the_provider_holds_is_notenough(provider):
    reply = pay(provider, "wd-big", amount_minor=100_001)
    assert reply.json["status"] == "FAILED" and reply.json["return_code"] == "NOTENOUGH"
    assert provider.applied == {}
    assert pay(provider, "wd-all", amount_minor=100_000).json["status"] == "SUCCESS"
    assert provider.balance_minor == 0


def test_connections_are_kept_alive(provider):
    connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=WAIT_S_MAX)
    try:
        for n in range(3):
            body = json.dumps({"account": "a", "amount_minor": 1, "currency": "CNY"})
            connection.request("POST", "/payouts", body=body, headers={"Idempotency-Key": f"k{n}"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["key"] == f"k{n}"
    finally:
        connection.close()
    assert len(provider.applied) == 3


def test_concurrent_requests_with_one_key_apply_it_once(provider):
    replies: List[Reply] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        reply = pay(provider, "wd-race", amount_minor=700)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S_MAX)
    assert len(replies) == 8 and len({r.raw for r in replies}) == 1
    assert provider.applied_count("wd-race") == 1 and provider.request_count("wd-race") == 8
    assert provider.balance_minor == 100_000 - 700


def test_requests_total_counts_every_request(provider):
    pay(provider, "a")
    call(provider, "GET", "/balance")
    call(provider, "GET", "/payouts/a")
    assert call(provider, "DELETE", "/payouts/a").status == 405
    assert provider.requests_total == 4


# ---------------------------------------------------------------- faults


def test_error_500_and_rate_limited_apply_nothing(provider):
    provider.fault_next("error_500")
    provider.fault_next("rate_limited", retry_after_s=3)
    failed = pay(provider, "wd-1")
    assert failed.status == 500
    limited = pay(provider, "wd-1")
    assert limited.status == 429 and limited.headers["retry-after"] == "3"
    assert provider.applied == {} and provider.result("wd-1") is None
    assert pay(provider, "wd-1").json["status"] == "SUCCESS"  # faults used up: the retry goes through
    assert provider.applied_count("wd-1") == 1 and provider.request_count("wd-1") == 3


def test_rate_limited_says_one_second_by_default(provider):
    provider.fault_next("rate_limited")
    assert pay(provider, "k").headers["retry-after"] == "1"


def test_fault_count_and_key_filter(provider):
    provider.fault_next("error_500", count=2, key="wd-x")
    assert pay(provider, "other").status == 200  # not the faulted key
    assert [pay(provider, "wd-x").status for _ in range(3)] == [500, 500, 200]


def test_slow_answers_normally_after_the_delay(provider):
    provider.fault_next("slow", delay_ms=50)
    started = time.monotonic()
    reply = pay(provider, "wd-slow")
    assert time.monotonic() - started >= 0.05  # a lower bound: it cannot flake
    assert reply.json["status"] == "SUCCESS" and provider.applied_count("wd-slow") == 1


def test_timeout_after_apply_moves_the_money_and_the_retry_gets_the_answer(provider):
    provider.fault_next("timeout_after_apply", delay_ms=60_000)
    with pytest.raises(socket.timeout):
        pay(provider, "wd-t", timeout_s=0.2)
    assert provider.applied_count("wd-t") == 1
    retried = pay(provider, "wd-t")
    assert retried.json["status"] == "SUCCESS"
    assert provider.applied_count("wd-t") == 1 and provider.request_count("wd-t") == 2


def test_drop_after_apply_closes_without_an_answer(provider):
    provider.fault_next("drop_after_apply")
    with pytest.raises(http.client.RemoteDisconnected):
        pay(provider, "wd-d")
    assert provider.applied == {"wd-d": 500}
    assert call(provider, "GET", "/payouts/wd-d").json["status"] == "SUCCESS"


@pytest.mark.parametrize("kind, code", [("insufficient_funds", "NOTENOUGH"), ("bad_account", "ACCOUNT_INVALID")])
def test_definite_failure_faults_are_recorded_and_apply_nothing(provider, kind, code):
    provider.fault_next(kind)
    reply = pay(provider, "wd-f")
    assert reply.status == 200 and reply.json["status"] == "FAILED" and reply.json["return_code"] == code
    assert pay(provider, "wd-f").json == reply.json  # the same definite answer on a retry
    assert provider.applied == {} and provider.balance_minor == 100_000


def test_error_code_is_transient_unless_recorded(provider):
    provider.fault_next("error_code", code="SYSTEM_BUSY")
    reply = pay(provider, "wd-e")
    assert reply.status == 200 and reply.json["status"] == "FAILED" and reply.json["return_code"] == "SYSTEM_BUSY"
    assert call(provider, "GET", "/payouts/wd-e").status == 404
    assert pay(provider, "wd-e").json["status"] == "SUCCESS"
    provider.fault_next("error_code", code="CARD_BLOCKED", record=True)
    assert pay(provider, "wd-r").json["return_code"] == "CARD_BLOCKED"
    assert pay(provider, "wd-r").json["return_code"] == "CARD_BLOCKED"
    assert provider.applied == {"wd-e": 500}


def test_a_recorded_key_keeps_its_answer_whatever_the_fault(provider):
    first = pay(provider, "wd-1")
    for kind in ("insufficient_funds", "bad_account", "error_code"):
        provider.fault_next(kind)
        assert pay(provider, "wd-1").raw == first.raw


def test_huge_body_is_a_valid_answer_padded_to_size(provider):
    provider.fault_next("huge_body", size_bytes=300_000)
    reply = pay(provider, "wd-h")
    assert len(reply.raw) == 300_000 and reply.headers["content-length"] == "300000"
    assert reply.json["status"] == "SUCCESS" and provider.applied_count("wd-h") == 1


def test_redirect_answers_307_and_applies_nothing(provider):
    provider.redirect_payouts_to("http://127.0.0.1:9/elsewhere")
    reply = pay(provider, "wd-r")
    assert reply.status == 307 and reply.headers["location"] == "http://127.0.0.1:9/elsewhere"
    assert provider.applied == {}
    provider.redirect_payouts_to(None)
    assert pay(provider, "wd-r").status == 200


def test_random_faults_are_seeded():
    def statuses(seed: int) -> List[int]:
        with FakeProvider(seed=seed) as p:
            p.fault_rates(error_500=0.3, rate_limited=0.2)
            return [pay(p, f"k{n}").status for n in range(30)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200, 429, 500} == set(first)


def test_random_faults_use_the_kinds_defaults(provider):
    provider.fault_defaults("rate_limited", retry_after_s=9)
    provider.fault_rates(rate_limited=1.0)
    assert pay(provider, "k").headers["retry-after"] == "9"
    provider.fault_rates()
    assert pay(provider, "k").status == 200


def test_fault_clear_forgets_queued_and_random_faults(provider):
    provider.fault_next("error_500", count=5)
    provider.fault_rates(error_500=1.0)
    provider.fault_clear()
    assert pay(provider, "k").status == 200


def test_bad_fault_requests_are_refused(provider):
    assert "timeout_after_apply" in FAULT_KINDS
    with pytest.raises(ValueError):
        provider.fault_next("meteor")
    with pytest.raises(ValueError):
        provider.fault_next("slow", delay=5)  # the parameter is delay_ms
    with pytest.raises(ValueError):
        provider.fault_next("slow", delay_ms=True)
    with pytest.raises(ValueError):
        provider.fault_next("slow", count=0)
    with pytest.raises(ValueError):
        provider.fault_rates(error_500=0.7, rate_limited=0.7)
    assert pay(provider, "k").status == 200


# ---------------------------------------------------------------- auth


def test_a_token_is_required_when_set():
    with FakeProvider(token="s3cret") as p:
        assert pay(p, "k").status == 401
        assert pay(p, "k", headers={"Authorization": "Bearer wrong"}).status == 401
        assert call(p, "GET", "/balance").status == 401
        assert p.applied == {}
        ok = pay(p, "k", headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200 and p.applied_count("k") == 1
        assert call(p, "GET", "/balance", headers={"Authorization": "Bearer s3cret"}).status == 200


# ---------------------------------------------------------------- life cycle


def test_url_and_context_manager():
    provider = FakeProvider()
    with pytest.raises(RuntimeError):
        provider.port
    with provider as p:
        assert p.url == f"http://127.0.0.1:{p.port}" and p.port > 0
        assert call(p, "GET", "/balance").status == 200
    with pytest.raises(OSError):
        call(provider, "GET", "/balance", timeout_s=2)
    provider.stop()  # idempotent


def test_stop_does_not_wait_for_sleeping_requests():
    provider = FakeProvider().start()
    provider.fault_next("slow", delay_ms=600_000)
    outcome: List[BaseException] = []

    def client() -> None:
        try:
            pay(provider, "k", timeout_s=600)
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    wait_for(lambda: provider.request_count("k") == 1, "the request to arrive")
    stopper = threading.Thread(target=provider.stop, daemon=True)
    stopper.start()
    stopper.join(WAIT_S_MAX)
    assert not stopper.is_alive(), "stop() hung on a sleeping request"
    thread.join(WAIT_S_MAX)
    assert len(outcome) == 1  # the client was cut off without an answer
    assert provider.applied == {}


# ---------------------------------------------------------------- callbacks


@dataclass(frozen=True)
class Received:
    body: bytes
    signature: str
    valid: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """The application's callback endpoint: checks the signature, answers
    200 if it verifies and 401 if not, and records everything."""

    def __init__(self, status_override: Optional[int] = None) -> None:
        self.received: List[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signature = self.headers.get("X-Signature", "")
                valid = FakeProvider.verify_signature(body, signature, SECRET)
                with receiver._cond:
                    receiver.received.append(Received(body, signature, valid))
                    receiver._cond.notify_all()
                status = status_override or (200 if valid else 401)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callback"

    def wait(self, count: int) -> List[Received]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.received) >= count, WAIT_S_MAX), self.received
            return list(self.received)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def notifying(receiver) -> Iterator[Tuple[FakeProvider, Receiver]]:
    with FakeProvider(callback_url=receiver.url, callback_secret=SECRET, seed=1) as p:
        yield p, receiver


def test_a_signed_callback_follows_each_definite_answer(notifying):
    provider, receiver = notifying
    pay(provider, "wd-ok", amount_minor=800)
    pay(provider, "wd-bad", account="bad:x")
    provider.fault_next("error_500")
    pay(provider, "wd-500")  # no definite answer: no callback
    assert provider.callbacks_drain()
    got = receiver.wait(2)
    assert all(r.valid for r in got)
    assert got[0].event == {"event_id": "evt_1", "key": "wd-ok", "status": "SUCCESS", "return_code": "SUCCESS",
                            "amount_minor": 800, "currency": "CNY"}
    assert got[1].event["key"] == "wd-bad" and got[1].event["return_code"] == "ACCOUNT_INVALID"
    assert len(receiver.received) == 2
    assert provider.callbacks_delivered == 2 and provider.callbacks_failed == []
    pay(provider, "wd-ok", amount_minor=800)  # a replay is no new event
    assert provider.callbacks_drain() and len(receiver.received) == 2


def test_a_forged_callback_does_not_verify(notifying):
    provider, receiver = notifying
    provider.callback_mode(forge=True)
    pay(provider, "wd-1")
    assert provider.callbacks_drain()
    [forged] = receiver.wait(1)
    assert not forged.valid
    assert not FakeProvider.verify_signature(forged.body, forged.signature, SECRET)
    # Refused with a 4xx: given up at once, recorded.
    [failure] = provider.callbacks_failed
    assert failure.key == "wd-1" and failure.attempts == 1 and "401" in failure.error
    assert provider.send_callback("wd-1") == 200
    assert provider.send_callback("wd-1", forge=True) == 401
    assert [r.valid for r in receiver.wait(3)] == [False, True, False]
    with pytest.raises(KeyError):
        provider.send_callback("never-paid")


def test_duplicate_callbacks_arrive_twice_with_one_event_id(notifying):
    provider, receiver = notifying
    provider.callback_mode(duplicate=2)
    pay(provider, "wd-1")
    assert provider.callbacks_drain()
    got = receiver.wait(2)
    assert len(got) == 2 and got[0].body == got[1].body and got[0].valid


def test_shuffled_callbacks_arrive_out_of_order(notifying, monkeypatch):
    provider, receiver = notifying
    # Only a full buffer (or a drain) releases the batch, however slow the machine.
    monkeypatch.setattr(fake_provider, "CALLBACK_SHUFFLE_WAIT_MS", 600_000)
    provider.callback_mode(shuffle=True)
    keys = [f"wd-{n}" for n in range(CALLBACK_SHUFFLE_BUFFER_MAX)]
    for key in keys:
        pay(provider, key)
    assert provider.callbacks_drain()
    arrived = [r.event["key"] for r in receiver.wait(len(keys))]
    assert sorted(arrived) == sorted(keys)
    # With seed 1, the shuffle of a full buffer is not the identity.
    assert arrived != keys


def test_delayed_callbacks_wait(notifying):
    provider, receiver = notifying
    provider.callback_mode(delay_ms=100)
    started = time.monotonic()
    pay(provider, "wd-1")
    receiver.wait(1)
    assert time.monotonic() - started >= 0.1  # a lower bound: it cannot flake


def test_undeliverable_callbacks_are_retried_then_recorded():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}/callback"
    with FakeProvider(callback_url=dead_url) as provider:
        pay(provider, "wd-1")
        assert provider.callbacks_drain()
        [failure] = provider.callbacks_failed
        assert failure.key == "wd-1" and failure.attempts == CALLBACK_ATTEMPT_COUNT_MAX
        assert provider.callbacks_sent == CALLBACK_ATTEMPT_COUNT_MAX
        assert provider.applied_count("wd-1") == 1  # the payout itself is unaffected


def test_a_failing_receiver_is_retried():
    with Receiver(status_override=503) as receiver, \
            FakeProvider(callback_url=receiver.url, callback_secret=SECRET) as provider:
        pay(provider, "wd-1")
        assert provider.callbacks_drain()
        assert len(receiver.wait(CALLBACK_ATTEMPT_COUNT_MAX)) == CALLBACK_ATTEMPT_COUNT_MAX
        assert provider.callbacks_failed[0].attempts == CALLBACK_ATTEMPT_COUNT_MAX


def test_verify_signature():
    body = b'{"event_id":"evt_1"}'
    signature = FakeProvider.signature(body, "k")
    assert len(signature) == 64
    assert FakeProvider.verify_signature(body, signature, "k")
    assert FakeProvider.verify_signature(body, signature.upper(), "k")
    assert not FakeProvider.verify_signature(body, signature, "other")
    assert not FakeProvider.verify_signature(body + b" ", signature, "k")
    assert not FakeProvider.verify_signature(body, "", "k")
    assert not FakeProvider.verify_signature(body, "zz\u00e9", "k")
