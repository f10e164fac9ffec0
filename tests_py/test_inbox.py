"""Provider callbacks through the inbox, against the fake provider over real
HTTP: forged ones are refused, duplicates settle once, a callback that
resolves an ``unknown`` payout captures the hold exactly once."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any, Dict, List

import pytest

import payq
from payq import Settle
from payq.inbox import CallbackReceiver, verify_hmac_sha256
from payq.testing import FakeProvider
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
    done = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return True
        done.wait(0.05)
    return False


def test_signature_check_is_constant_time_hmac() -> None:
    body = b'{"event_id":"e1"}'
    signature = FakeProvider.signature(body, SECRET)
    assert verify_hmac_sha256(body, signature, SECRET)
    assert not verify_hmac_sha256(body + b" ", signature, SECRET)
    assert not verify_hmac_sha256(body, signature, "other-secret")
    assert not verify_hmac_sha256(body, None, SECRET)
    with pytest.raises(payq.InvalidArgument):
        CallbackReceiver(db=None, provider="fake", secret="")


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
