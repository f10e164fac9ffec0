"""Provider callbacks through the inbox, against the fake provider over real
HTTP: forged ones are refused, duplicates settle once, a callback that
resolves an ``unknown`` payout captures the hold exactly once."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any, Dict, List

import pytest

import payq
from payq import Settle
from payq.inbox import CallbackReceiver, verify_hmac_sha256
from payq.testing import FakeProvider, wait_until
from payq.worker import Registry, Worker

SECRET = "inbox-test-secret"


def _withdrawal(db: payq.Database, key: str, amount: str = "30.00", max_attempts: int = 1) -> Dict[str, Any]:
    world = db.ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = db.ledger.account("provider", "CNY", "system", allow_negative=True)
    wallet = db.ledger.account("user:1", "CNY")
    db.ledger.transfer(world, wallet, "100.00", key=f"fund/{key}")
    with db.transaction() as t:
        hold = t.ledger.hold(wallet, amount, key=f"hold/{key}")
        task = t.enqueue("payout", {"account": "wallet:1", "amount_minor": 3000, "currency": "CNY"},
                         queue="provider", idempotency_key=key, max_attempts=max_attempts,
                         settle=Settle.capture(hold, into=clearing))
    return {"wallet": wallet, "clearing": clearing, "hold": hold, "task_id": task.task_id}


def _pay(provider: FakeProvider, task: payq.TaskRun, timeout_s: float) -> Dict[str, Any]:
    request = urllib.request.Request(provider.url + "/payouts", data=json.dumps(task.payload).encode(),
                                     headers={"Idempotency-Key": task.idempotency_key,
                                              "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def _wait(predicate, timeout_s: float = 30.0) -> bool:
    return bool(wait_until(predicate, timeout_s))


def test_signature_check_is_constant_time_hmac() -> None:
    body = b'{"event_id":"e1"}'
    signature = FakeProvider.signature(body, SECRET)
    assert verify_hmac_sha256(body, signature, SECRET)
    assert not verify_hmac_sha256(body + b" ", signature, SECRET)
    assert not verify_hmac_sha256(body, signature, "other-secret")
    assert not verify_hmac_sha256(body, None, SECRET)
    with pytest.raises(payq.InvalidArgument):
        CallbackReceiver(db=None, provider="fake", secret="")


def test_signature_check_refuses_non_ascii_signatures_instead_of_raising() -> None:
    # Found by fuzz/inbox_signature_fuzz.py: hmac.compare_digest raises
    # TypeError for a str with non-ASCII characters.
    body = b'{"event_id":"e1"}'
    signature = FakeProvider.signature(body, SECRET)
    for forged in ("\u00e9" * 64, "\udcff", signature[:-1] + "\u00e9", "\uff41" + signature[1:]):
        assert verify_hmac_sha256(body, forged, SECRET) is False
    assert verify_hmac_sha256(body, " " + signature.upper() + "\t", SECRET) is True


def test_forged_and_malformed_callbacks_write_nothing(payq_db: payq.Database) -> None:
    w = _withdrawal(payq_db, "wd-forged")
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    body = json.dumps({"event_id": "e1", "key": "wd-forged", "status": "SUCCESS"}).encode()
    assert receiver.handle(body, {"X-Signature": "00" * 32})[0] == 401
    assert receiver.handle(body, {})[0] == 401
    bad = b'{"event_id": "e2"}'
    assert receiver.handle(bad, {"x-signature": FakeProvider.signature(bad, SECRET)})[0] == 400
    processing = json.dumps({"event_id": "e3", "key": "wd-forged", "status": "PROCESSING"}).encode()
    assert receiver.handle(processing, {"X-Signature": FakeProvider.signature(processing, SECRET)})[0] == 202
    with payq_db.transaction() as t:
        assert t.execute("SELECT count(*) FROM @schema@.inbox_event")[0][0] == "0"
    assert payq_db.tasks.get(w["task_id"]).state == "pending"


def test_unknown_payout_is_settled_once_by_duplicated_callbacks(payq_db: payq.Database) -> None:
    """The provider applies the payout but answers too late (the worker
    records ``unknown``); its callback, delivered three times, settles it."""
    w = _withdrawal(payq_db, "wd-timeout")
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    registry = Registry()
    with receiver.serve() as endpoint, FakeProvider(callback_url=endpoint.url, callback_secret=SECRET) as provider:
        provider.callback_mode(duplicate=3, delay_ms=200)
        provider.fault_next("timeout_after_apply", delay_ms=2_000)

        @registry.handler("payout")
        def payout(task: payq.TaskRun) -> Any:
            try:
                return _pay(provider, task, timeout_s=0.5)
            except (TimeoutError, urllib.error.URLError) as exc:
                raise payq.Unknown(f"no answer in time: {exc}") from exc

        worker = Worker(payq_db, queues=["provider"], registry=registry, concurrency=2,
                        poll_interval=timedelta(milliseconds=50))
        worker.start()
        try:
            settled = _wait(lambda: payq_db.tasks.get(w["task_id"]).state == "succeeded")
            assert settled, (receiver.counts, provider.callbacks_sent, provider.callbacks_failed)
            assert provider.callbacks_drain(timeout_s=10)
        finally:
            worker.stop()

        assert provider.applied_count("wd-timeout") == 1
    wallet = payq_db.ledger.account("user:1", "CNY")
    assert (wallet.balance, wallet.held) == (payq.Money("70.00", "CNY"), payq.Money(0, "CNY"))  # captured
    assert payq_db.ledger.account("provider", "CNY", "system").balance == payq.Money("30.00", "CNY")
    effects: List[str] = []
    with payq_db.transaction() as t:
        effects = [row[0] for row in t.execute("SELECT effect FROM @schema@.inbox_event")]
    assert effects.count("settled_success") == 1
    assert receiver.counts.get("duplicate", 0) == 2
    assert payq_db.ledger.audit().ok


def test_failure_callback_releases_the_hold(payq_db: payq.Database) -> None:
    w = _withdrawal(payq_db, "wd-fails", max_attempts=3)
    with payq_db.transaction() as t:
        # The worker could not tell (a timeout): the task waits to retry.
        t.execute("UPDATE @schema@.task SET attempt = 1, run_at = now() + interval '1 hour' WHERE id = $1",
                  [w["task_id"]])
    result = payq_db.inbox.receive(provider="fake", event_id="evt-9", key="wd-fails", applied=False,
                                   payload={"return_code": "ACCOUNT_INVALID"})
    assert (result.effect, result.task_id, result.task_state) == ("settled_failure", w["task_id"], "dead")
    assert payq_db.inbox.receive(provider="fake", event_id="evt-9", key="wd-fails", applied=False).duplicate
    wallet = payq_db.ledger.account("user:1", "CNY")
    assert (wallet.balance, wallet.held) == (payq.Money("100.00", "CNY"), payq.Money(0, "CNY"))  # released
    with payq_db.transaction() as t:
        actions = t.execute("SELECT action, actor, note FROM @schema@.task_action WHERE task_id = $1",
                            [w["task_id"]])
    assert actions == [("callback_not_applied", "callback:fake", "event evt-9")]


def test_bad_input_is_a_typed_error(payq_db: payq.Database) -> None:
    with pytest.raises(payq.InvalidArgument):
        payq_db.inbox.receive(provider="", event_id="e", key="k", applied=True)
    with pytest.raises(payq.InvalidArgument):
        payq_db.inbox.receive(provider="fake", event_id="e", key="k" * 300, applied=True)
    with pytest.raises(payq.InvalidArgument):
        payq_db.inbox.receive(provider="fake", event_id="e", key="k", applied=True, payload={"x": float("nan")})
    with pytest.raises(payq.InvalidArgument):
        payq_db.inbox.prune(3600)  # type: ignore[arg-type]
    assert payq_db.inbox.prune(timedelta(days=90)) == 0


# ---------------------------------------------------------------- hostile requests at the door

# Every answer these tests wait for comes within this long, or the test fails.
_ANSWER_TIMEOUT_S = 5.0


def _raw_post(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Sends a hand-written request (`head` without the request line) and
    returns the raw answer, b"" when the connection closes without one."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=_ANSWER_TIMEOUT_S) as sock:
        # HTTP/1.1 keeps a connection open after an answer unless told not to.
        sock.sendall(b"POST /callbacks HTTP/1.1\r\nHost: payq\r\nConnection: close\r\n" + head + b"\r\n" + body)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def _status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/"), answer
    return int(answer.split(b" ", 2)[1])


def _inbox_events(db: payq.Database) -> int:
    with db.transaction() as t:
        return int(t.execute("SELECT count(*) FROM @schema@.inbox_event")[0][0])


def test_bad_content_length_is_refused_before_the_body_is_read(payq_db: payq.Database) -> None:
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    with receiver.serve() as endpoint:
        # No body follows: a server that tried to read one would wait (until
        # _ANSWER_TIMEOUT_S fails the test) instead of answering.
        for length, status in ((b"-1", 400), (b"abc", 400), (b"1e3", 400), (b"+5", 400), (b"9" * 30, 413),
                               (str(64 * 1024 + 1).encode(), 413), (str(8 * 1024 * 1024).encode(), 413)):
            answer = _raw_post(endpoint.url, b"Content-Length: " + length + b"\r\n")
            assert _status_of(answer) == status, (length, answer)
        assert _status_of(_raw_post(endpoint.url, b"Content-Length: 5\r\nContent-Length: 6\r\n")) == 400
        # A chunked body is read within the same bound: refused once past
        # it, and handled (here: its missing signature) when within it.
        chunk = b"x" * 40_000
        chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n"
        assert _status_of(_raw_post(endpoint.url, b"Transfer-Encoding: chunked\r\n", chunks)) == 413
        answer = _raw_post(endpoint.url, b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n")
        assert _status_of(answer) == 401 and answer.endswith(b'{"effect": "bad_signature"}'), answer

        # -1 followed by 8 MiB: answered at once, and at most a bounded part
        # of the 8 MiB is ever read (the rest meets a closed connection).
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=_ANSWER_TIMEOUT_S) as sock:
            sock.sendall(b"POST /callbacks HTTP/1.1\r\nHost: payq\r\nContent-Length: -1\r\n\r\n")
            sent = 0
            try:
                for _ in range(8 * 16):
                    sock.sendall(b"x" * 65536)
                    sent += 65536
            except OSError:
                pass  # the server closed: it does not read the rest
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
        assert answer == b"" or _status_of(answer) == 400
    # Refusals by the HTTP layer are counted like the receiver's own.
    assert receiver.counts.get("bad_request", 0) >= 5 and receiver.counts.get("too_large", 0) == 4
    assert _inbox_events(payq_db) == 0


def test_malformed_requests_are_answered_400_not_dropped(payq_db: payq.Database) -> None:
    w = _withdrawal(payq_db, "wd-hostile")
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    deep = b"[" * 30_000 + b"]" * 30_000
    nested = b'{"event_id":"e-deep","key":"wd-hostile","status":"SUCCESS","x":' + deep + b"}"
    with receiver.serve() as endpoint:
        body = json.dumps({"event_id": "e1", "key": "wd-hostile", "status": "SUCCESS"}).encode()
        head = b"Content-Length: %d\r\nX-Signature: \xe9\xe9\xe9\r\n" % len(body)
        assert _status_of(_raw_post(endpoint.url, head, body)) == 400
        head = b"Content-Length: %d\r\nX-Signature: %s\r\n" % (len(nested),
                                                               FakeProvider.signature(nested, SECRET).encode())
        assert _status_of(_raw_post(endpoint.url, head, nested)) == 400
    assert _inbox_events(payq_db) == 0
    assert payq_db.tasks.get(w["task_id"]).state == "pending"


def test_handle_answers_hostile_requests_and_raises_typed_errors_for_wrong_calls(payq_db: payq.Database) -> None:
    # As a Django or Flask view calls it.
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    body = json.dumps({"event_id": "e1", "key": "k", "status": "SUCCESS"}).encode()
    assert receiver.handle(body, {"X-Signature": "\u00e9" * 64}) == (400, {"effect": "bad_request"})
    deep = b'{"event_id":"e2","key":"k","status":"SUCCESS","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    assert receiver.handle(deep, {"X-Signature": FakeProvider.signature(deep, SECRET)})[0] == 400
    just_deep_enough = b'{"event_id":"e3","key":"k","status":"PROCESSING","x":' + b"[" * 60 + b"]" * 60 + b"}"
    assert receiver.handle(just_deep_enough, {"X-Signature": FakeProvider.signature(just_deep_enough, SECRET)})[0] \
        == 202
    surrogate = b'{"event_id":"e4","key":"\\ud800","status":"SUCCESS"}'  # no text PostgreSQL can store
    assert receiver.handle(surrogate, {"X-Signature": FakeProvider.signature(surrogate, SECRET)})[0] == 400
    not_an_object = b"[1, 2]"
    assert receiver.handle(not_an_object, {"X-Signature": FakeProvider.signature(not_an_object, SECRET)})[0] == 400
    with pytest.raises(payq.InvalidArgument):
        receiver.handle(body.decode(), {})  # type: ignore[arg-type]
    with pytest.raises(payq.InvalidArgument):
        receiver.handle(body, None)  # type: ignore[arg-type]
    assert _inbox_events(payq_db) == 0


def test_signed_callback_with_nul_is_refused_400_before_the_database(payq_db: payq.Database) -> None:
    w = _withdrawal(payq_db, "wd-nul")
    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    bodies = [b'{"event_id":"e-nul-1","key":"wd-nul","status":"SUCCESS","note":"a\\u0000b"}',
              b'{"event_id":"e-nul-2","key":"wd-nul","status":"SUCCESS","deep":[{"x\\u0000":1}]}',
              b'{"event_id":"e-nul-3\\u0000","key":"wd-nul","status":"SUCCESS"}']
    with receiver.serve() as endpoint:
        for body in bodies:
            assert receiver.handle(body, {"X-Signature": FakeProvider.signature(body, SECRET)})[0] == 400, body
            head = b"Content-Length: %d\r\nX-Signature: %s\r\n" % (len(body),
                                                                   FakeProvider.signature(body, SECRET).encode())
            assert _status_of(_raw_post(endpoint.url, head, body)) == 400, body
    assert _inbox_events(payq_db) == 0
    assert payq_db.tasks.get(w["task_id"]).state == "pending"


def test_the_endpoint_answers_post_only_and_keeps_http11_connections(payq_db: payq.Database) -> None:
    import socket
    from urllib.parse import urlsplit

    receiver = CallbackReceiver(payq_db, provider="fake", secret=SECRET)
    with receiver.serve() as endpoint:
        parts = urlsplit(endpoint.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=_ANSWER_TIMEOUT_S) as sock:
            # Two requests on one connection (a provider's pooled client): each answered.
            for _ in range(2):
                sock.sendall(b"POST /callbacks HTTP/1.1\r\nHost: payq\r\nContent-Length: 2\r\n\r\n{}")
                answer = b""
                while not answer.endswith(b'{"effect": "bad_signature"}'):
                    chunk = sock.recv(65536)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 401 ")
        got = urllib.request.Request(endpoint.url, method="GET")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(got, timeout=_ANSWER_TIMEOUT_S)
        refused.value.close()
        assert refused.value.code == 405 and refused.value.headers["Allow"] == "POST"
    assert receiver.counts.get("bad_signature") == 2
