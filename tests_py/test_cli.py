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
    again = _cli(payq_db, "enqueue", "sms.send", "--unique-key", "sms-1")
    assert "already existed" in again.stdout
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
