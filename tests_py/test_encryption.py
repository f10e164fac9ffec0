"""Encrypted payloads at the Python boundary (payq/keyring.py, the worker's
encrypt=True, payq keys, the CLI and the dashboard); the logic itself is
tested in tests_cpp/keyring_test.cpp and tests_cpp/encryption_test.cpp."""

import base64
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

import payq
from payq import keyring as keyring_module
from payq.dashboard import make_app
from payq.keyring import Keyring
from payq.worker import Registry, Worker

from test_dashboard import TOKEN, Client, login

SECRET = "DE89370400440532013000"
KEY_1 = base64.b64encode(b"a" * 32).decode()
KEY_2 = base64.b64encode(b"b" * 32).decode()
WAIT_S_MAX = 30.0


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch):
    """No keyring from the developer's environment, and the process-wide
    set of encrypted kinds as it was (registrations here add to it)."""
    for name in ("PAYQ_KEYS", "PAYQ_KEY_CURRENT", "PAYQ_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    kinds = set(keyring_module._kinds_encrypted)
    yield
    keyring_module._kinds_encrypted.clear()
    keyring_module._kinds_encrypted.update(kinds)


def _until(predicate, timeout_s=WAIT_S_MAX):
    done = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return True
        done.wait(0.05)
    return predicate()


def _run(db, registry, predicate, keyring):
    worker = Worker(db, registry=registry, keyring=keyring, concurrency=1, poll_interval=timedelta(milliseconds=50),
                    maintenance=False, log=True)
    worker.start()
    try:
        return _until(predicate)
    finally:
        worker.stop()


def _row_text(db, task_id):
    with db.transaction() as t:
        return t.execute("SELECT row_to_json(x)::text FROM @schema@.task x WHERE id = $1", [task_id])[0][0]


def test_keyrings_load_from_code_environment_and_file_and_never_show_a_key(monkeypatch, tmp_path):
    ring = Keyring({"k1": KEY_1, "k2": b"b" * 32}, current="k2")
    assert ring.ids == ("k1", "k2") and ring.current == "k2" and "k1" in ring
    assert repr(ring) == "Keyring(ids=['k1', 'k2'], current='k2')"
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    with pytest.raises(payq.InvalidArgument) as short:
        Keyring({"k1": base64.b64encode(b"x" * 31).decode()})
    assert base64.b64encode(b"x" * 31).decode() not in str(short.value)
    with pytest.raises(payq.InvalidArgument):
        Keyring({"k1": KEY_1, "k2": KEY_2})  # which one is current?

    with pytest.raises(payq.ConfigError):
        Keyring.from_env()
    monkeypatch.setenv("PAYQ_KEYS", f"k1:{KEY_1},k2:{KEY_2}")
    monkeypatch.setenv("PAYQ_KEY_CURRENT", "k1")
    assert Keyring.from_env().current == "k1"
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-12\nk1:{KEY_1}\nk2:{KEY_2}\ncurrent=k2\n")
    path.chmod(0o600)
    assert Keyring.from_file(path).current == "k2"
    monkeypatch.setenv("PAYQ_KEYS_FILE", str(path))
    assert Keyring.from_env().current == "k2"  # the file wins
    path.write_text(f"k1:{KEY_1[:-4]}\n")
    with pytest.raises(payq.ConfigError) as bad:
        Keyring.from_file(path)
    assert KEY_1[:-4] not in str(bad.value)
    assert len(base64.b64decode(Keyring.generate_key())) == 32


def test_encrypt_without_a_keyring_is_key_missing_and_nothing_is_written(payq_db):
    with pytest.raises(payq.KeyMissing):
        payq_db.enqueue("payout.nokey", {"iban": SECRET}, encrypt=True)
    with pytest.raises(payq.KeyMissing):
        payq_db.enqueue_many([payq.TaskRequest("payout.nokey", {"n": 1}),
                              payq.TaskRequest("payout.nokey", {"n": 2}, encrypt=True)])
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("payout.nokey", {"n": 3}, keyring=Keyring({"k1": KEY_1}))
    assert payq_db.tasks.list() == []


def test_an_encrypted_kind_runs_on_the_clear_payload_and_stores_and_logs_nothing_clear(payq_db, capfd, caplog):
    keys = Keyring({"k1": KEY_1})
    registry = Registry()
    seen = []

    @registry.handler("payout.enc", encrypt=True)
    def payout(task):
        seen.append(task.payload["iban"])
        if task.payload["n"] == 1:
            raise RuntimeError(f"provider declined {task.payload['iban']}")
        return {"paid_to": task.payload["iban"]}

    # Registered with encrypt=True: its enqueues are encrypted unasked.
    ok = payq_db.enqueue("payout.enc", {"n": 0, "iban": SECRET}, keyring=keys).task_id
    declined = payq_db.enqueue("payout.enc", {"n": 1, "iban": SECRET}, keyring=keys, max_attempts=1).task_id
    assert payq.keyring.task_encrypted(payq_db.tasks.get(ok))
    with pytest.raises(payq.InvalidArgument):
        payq_db.enqueue("payout.enc", {"n": 2}, encrypt=False)
    caplog.set_level(logging.INFO, logger="payq")
    assert _run(payq_db, registry, lambda: {payq_db.tasks.get(i).state for i in (ok, declined)} == {"succeeded", "dead"},
                keys)
    assert seen == [SECRET, SECRET]
    done = payq_db.tasks.get(ok)
    assert done.result != {"paid_to": SECRET}
    assert payq.keyring.task_decrypted(done, keys).result == {"paid_to": SECRET}
    dead = payq.keyring.task_decrypted(payq_db.tasks.get(declined), keys)
    assert dead.error == f"RuntimeError: provider declined {SECRET}"
    [attempt] = payq_db.tasks.attempts(declined)
    clear_attempt = payq.keyring.attempt_decrypted(attempt, "payout.enc", keys)
    assert SECRET in clear_attempt.traceback and SECRET not in (attempt.traceback or "")
    for task_id in (ok, declined):
        assert SECRET not in _row_text(payq_db, task_id)
    captured = capfd.readouterr()
    assert "task_done" in captured.err  # the worker's log was on
    assert SECRET not in captured.err + captured.out
    assert all(SECRET not in record.getMessage() and record.exc_info is None for record in caplog.records)


def test_an_async_encrypted_kind_runs_on_the_clear_payload_and_stores_nothing_clear(payq_db, caplog):
    keys = Keyring({"k1": KEY_1})
    registry = Registry()
    seen = []

    @registry.handler("payout.enc.async", encrypt=True)
    async def payout(task):
        seen.append(task.payload["iban"])
        if task.payload["n"] == 1:
            raise RuntimeError(f"provider declined {task.payload['iban']}")
        return {"paid_to": task.payload["iban"]}

    ok = payq_db.enqueue("payout.enc.async", {"n": 0, "iban": SECRET}, keyring=keys).task_id
    declined = payq_db.enqueue("payout.enc.async", {"n": 1, "iban": SECRET}, keyring=keys, max_attempts=1).task_id
    caplog.set_level(logging.INFO, logger="payq")
    assert _run(payq_db, registry, lambda: {payq_db.tasks.get(i).state for i in (ok, declined)} == {"succeeded", "dead"},
                keys)
    assert seen == [SECRET, SECRET]
    assert payq.keyring.task_decrypted(payq_db.tasks.get(ok), keys).result == {"paid_to": SECRET}
    assert payq.keyring.task_decrypted(payq_db.tasks.get(declined), keys).error == f"RuntimeError: provider declined {SECRET}"
    for task_id in (ok, declined):
        assert SECRET not in _row_text(payq_db, task_id)
    assert all(SECRET not in record.getMessage() and record.exc_info is None for record in caplog.records)


def test_an_unreadable_task_goes_to_needs_review_without_running_the_handler(payq_db):
    calls = []
    registry = Registry()
    registry.handler("payout.lost", encrypt=True)(lambda task: calls.append(task.id))
    keyring_module._kind_unregister("payout.lost")  # enqueued below with another keyring explicitly
    task_id = payq_db.enqueue("payout.lost", {"iban": SECRET}, encrypt=True,
                              keyring=Keyring({"k9": KEY_2})).task_id
    assert _run(payq_db, registry, lambda: payq_db.tasks.get(task_id).state == "needs_review",
                Keyring({"k1": KEY_1}))
    task = payq_db.tasks.get(task_id)
    assert calls == [] and task.attempt == 1
    assert "KeyMissing" in task.error and "the handler was not called" in task.error
    # The worker needs a keyring for its encrypted kinds: none at all is refused at once.
    with pytest.raises(payq.KeyMissing):
        Worker(payq_db, registry=registry)


def _cli(db, *args, keys=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYQ_KEY")}
    env.update(keys or {})
    return subprocess.run([sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_shows_an_encrypted_task_only_with_its_key_and_rotates_waiting_tasks(payq_db):
    k1 = Keyring({"k1": KEY_1})
    ids = [payq_db.enqueue("payout.cli", {"n": n, "iban": SECRET}, encrypt=True, keyring=k1).task_id
           for n in range(3)]
    listing = json.loads(_cli(payq_db, "tasks", "list", "--json").stdout)
    assert {t["payload"] for t in listing} == {"encrypted"}
    refused = _cli(payq_db, "tasks", "show", str(ids[0]))
    assert refused.returncode == 2 and "KeyMissing" in refused.stderr and SECRET not in refused.stdout
    shown = _cli(payq_db, "tasks", "show", str(ids[0]), "--json", keys={"PAYQ_KEYS": f"k1:{KEY_1}"})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["payload"] == {"n": 0, "iban": SECRET}

    both = {"PAYQ_KEYS": f"k1:{KEY_1},k2:{KEY_2}", "PAYQ_KEY_CURRENT": "k2"}
    rotated = _cli(payq_db, "keys", "rotate", "--batch", "2", "--json", keys=both)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"current": "k2", "rotated": 3, "unreadable": [], "batches": 2,
                                          "remaining": 0}
    status = json.loads(_cli(payq_db, "keys", "status", "--json", keys=both).stdout)
    assert status["tasks"] == [{"key": "k2", "state": "pending", "count": 3}]
    # k1 may go now: k2 alone reads every task.
    only_k2 = Keyring({"k2": KEY_2})
    assert [payq.keyring.task_decrypted(payq_db.tasks.get(i), only_k2).payload["n"] for i in ids] == [0, 1, 2]
    refused_rotation = _cli(payq_db, "keys", "rotate")
    assert refused_rotation.returncode == 2 and "KeyMissing" in refused_rotation.stderr


def test_dashboard_shows_encrypted_without_the_key_and_clear_with_it(payq_db, monkeypatch):
    keys = Keyring({"k1": KEY_1})
    task_id = payq_db.enqueue("payout.dash", {"iban": SECRET}, encrypt=True, keyring=keys).task_id
    with make_app(payq_db, token=TOKEN) as app:
        client = Client(app)
        assert login(client).status == 303
        page = client.get(f"/tasks/{task_id}")
        assert page.status == 200 and SECRET not in page.text
        assert "encrypted" in page.text and "KeyMissing" in page.text
        monkeypatch.setenv("PAYQ_KEYS", f"k1:{KEY_1}")
        page = client.get(f"/tasks/{task_id}")
        assert page.status == 200 and SECRET in page.text and "KeyMissing" not in page.text
