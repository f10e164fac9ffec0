import json
import subprocess
import sys

import payq


def _cli(payq_db, *args):
    return subprocess.run([sys.executable, "-m", "payq", "--dsn", payq_db.dsn, "--schema", payq_db.schema, *args],
                          capture_output=True, text=True, timeout=120)


def test_enqueue_stats_show_and_operator_actions(payq_db):
    first = _cli(payq_db, "enqueue", "sms.send", "--payload", '{"to": "+86"}', "--unique-key", "sms-1")
    assert first.returncode == 0 and "enqueued" in first.stdout
    again = _cli(payq_db, "enqueue", "sms.send", "--payload", '{"to": "+86"}', "--unique-key", "sms-1")
    assert "already existed" in again.stdout
    # The key names one request: another payload under it is refused.
    other = _cli(payq_db, "enqueue", "sms.send", "--unique-key", "sms-1")
    assert other.returncode == 2 and "IdempotencyConflict" in other.stderr
    stats = json.loads(_cli(payq_db, "stats", "--json").stdout)
    assert stats == {"default": {"pending": 1}}
    [task] = payq_db.tasks.list()
    show = _cli(payq_db, "tasks", "show", str(task.id))
    assert '"kind": "sms.send"' in show.stdout
    cancel = _cli(payq_db, "tasks", "cancel", str(task.id), "--actor", "ops:test", "--note", "duplicate")
    assert cancel.returncode == 0
    assert payq_db.tasks.get(task.id).state == "cancelled"
    retry = _cli(payq_db, "tasks", "retry", str(task.id), "--actor", "ops:test")
    assert retry.returncode == 0
    assert payq_db.tasks.get(task.id).state == "pending"
    wrong = _cli(payq_db, "tasks", "resolve", str(task.id), "--actor", "ops:test", "--applied")
    assert wrong.returncode == 2 and "InvalidState" in wrong.stderr
    listing = _cli(payq_db, "tasks", "list", "--state", "pending")
    assert "sms.send" in listing.stdout


def test_bad_payload_is_a_typed_error(payq_db):
    result = _cli(payq_db, "enqueue", "x", "--payload", "{nope")
    assert result.returncode == 2 and "InvalidArgument" in result.stderr
    assert payq_db.tasks.list() == []


def test_tasks_list_filters_and_json(payq_db):
    first = payq_db.enqueue("sms.send", {"to": "a"}, queue="sms", unique_key="sms-a")
    payq_db.enqueue("sms.send", {"to": "b"}, queue="sms")
    payq_db.enqueue("crm.push", {"id": 1}, queue="crm")

    by_kind = json.loads(_cli(payq_db, "tasks", "list", "--kind", "sms.send", "--json").stdout)
    assert [t["kind"] for t in by_kind] == ["sms.send", "sms.send"]
    by_key = json.loads(_cli(payq_db, "tasks", "list", "--key", "sms-a", "--json").stdout)
    assert [t["id"] for t in by_key] == [first.task_id]
    by_queue = json.loads(_cli(payq_db, "tasks", "list", "--queue", "crm", "--json").stdout)
    assert [t["payload"] for t in by_queue] == [{"id": 1}]
    # Nothing is a day old yet.
    assert json.loads(_cli(payq_db, "tasks", "list", "--older-than", "1d", "--json").stdout) == []
    assert len(json.loads(_cli(payq_db, "tasks", "list", "--older-than", "0s", "--json").stdout)) == 3
    # Paging: a full page says where the next one starts.
    page = _cli(payq_db, "tasks", "list", "--limit", "2")
    assert "(more: --after-id" in page.stdout
    rest = json.loads(_cli(payq_db, "tasks", "list", "--after-id", str(by_kind[1]["id"]), "--json").stdout)
    assert [t["kind"] for t in rest] == ["crm.push"]

    shown = json.loads(_cli(payq_db, "tasks", "show", str(first.task_id), "--json").stdout)
    assert shown["unique_key"] == "sms-a" and shown["attempts"] == []


def test_queues_list_set_pause_resume(payq_db):
    payq_db.enqueue("payout", {}, queue="provider-a")
    payq_db.enqueue("payout", {}, queue="provider-a")

    assert _cli(payq_db, "queues", "set", "provider-a", "--concurrency", "4", "--rate", "10/1s",
                "--amount", "50000.00CNY/1h", "--weight", "3").returncode == 0
    assert _cli(payq_db, "queues", "pause", "provider-a").returncode == 0
    [queue] = json.loads(_cli(payq_db, "queues", "list", "--json").stdout)
    assert queue["name"] == "provider-a" and queue["paused"] is True
    assert queue["pending"] == 2 and queue["runnable"] == 2 and queue["running"] == 0
    assert queue["concurrency"] == 4 and queue["weight"] == 3
    assert queue["rate"] == {"count": 10, "window_s": 1.0}
    assert queue["amount"] == {"amount": "50000.00 CNY", "window_s": 3600.0}

    table = _cli(payq_db, "queues")
    assert table.returncode == 0
    assert "provider-a" in table.stdout and "paused" in table.stdout and "concurrency 4" in table.stdout

    assert _cli(payq_db, "queues", "resume", "provider-a").returncode == 0
    assert payq_db.queues.get("provider-a").paused is False


def test_exit_codes(payq_db):
    usage = _cli(payq_db, "queues", "set", "q", "--rate", "ten per second")
    assert usage.returncode == 64 and "not a rate" in usage.stderr
    assert _cli(payq_db, "tasks", "list", "--older-than", "soon").returncode == 64
    assert _cli(payq_db, "no-such-command").returncode == 64
    refused = _cli(payq_db, "tasks", "show", "999999")
    assert refused.returncode == 2 and "UnknownTask" in refused.stderr
    unreachable = subprocess.run([sys.executable, "-m", "payq", "--dsn", "host=/nonexistent dbname=x",
                                  "stats"], capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 69
    audit = json.loads(_cli(payq_db, "ledger", "audit", "--json").stdout)
    assert audit["ok"] is True and audit["violations"] == []


def test_stats_prometheus(payq_db):
    payq_db.enqueue("sms.send", {}, queue="sms")
    text = _cli(payq_db, "stats", "--prometheus").stdout
    assert '# TYPE payq_queue_tasks gauge' in text
    assert 'payq_queue_tasks{queue="sms",state="pending"} 1' in text


def test_ledger_history_json(payq_db):
    world = payq_db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = payq_db.ledger.account("alice", "CNY")
    payq_db.ledger.transfer(world, alice, "12.34", key="h-1")
    [entry] = json.loads(_cli(payq_db, "ledger", "history", str(alice.id), "--json").stdout)
    assert entry["amount"] == "12.34" and entry["balance_before"] == "0.00" and entry["balance_after"] == "12.34"
