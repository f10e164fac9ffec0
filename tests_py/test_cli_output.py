"""What the ``payq`` command shows and accepts (issue 21 section 3): names
whole or ellipsised, unknown queues refused, operators' actions in ``tasks
show``, global options anywhere, ``--json`` on every listing and action,
help and version, the demo's own schema, finished tasks that tell the
truth."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Any, Iterator, List

import pytest

import payq
from payq._native import core
from payq.cli import _parser
from payq.testing import fresh_schema

LONG_QUEUE = "provider-with-a-rather-long-queue-name-0123456789x"  # 50 characters
LONG_KIND = "payout.to-a-wallet-with-a-very-long-kind-name-xyz"
SHORT_QUEUE = "provider-a-twentyfive-chr"  # cut at 20 (16 in tasks list) before


def _cli(db: payq.Database, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, *args],
                          capture_output=True, text=True, timeout=120)


def _cli_after(db: payq.Database, *args: str) -> "subprocess.CompletedProcess[str]":
    """The global options after the command instead of before it."""
    return subprocess.run([sys.executable, "-m", "payq", *args, "--dsn", db.dsn, "--schema", db.schema],
                          capture_output=True, text=True, timeout=120)


def _bare(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "payq", *args], capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- names in tables


def test_tables_show_names_whole_or_ellipsised_and_wide_shows_them_whole(payq_db: payq.Database) -> None:
    assert len(SHORT_QUEUE) == 25 and len(LONG_QUEUE) == 50
    payq_db.enqueue("sms.send", {}, queue=SHORT_QUEUE)
    payq_db.enqueue(LONG_KIND, {}, queue=LONG_QUEUE)
    cut = LONG_QUEUE[:29] + "..."
    for command in (["queues"], ["stats"], ["tasks", "list"]):
        table = _cli(payq_db, *command)
        assert table.returncode == 0, table.stderr
        # A name that fits is shown whole; a longer one ends in an ellipsis.
        assert SHORT_QUEUE in table.stdout, (command, table.stdout)
        assert cut in table.stdout and LONG_QUEUE not in table.stdout, (command, table.stdout)
        wide = _cli(payq_db, *command, "--wide")
        assert wide.returncode == 0, wide.stderr
        assert LONG_QUEUE in wide.stdout and "..." not in wide.stdout, (command, wide.stdout)
    listing = _cli(payq_db, "tasks", "list", "--wide").stdout
    assert LONG_KIND in listing


def test_pausing_or_resuming_an_unknown_queue_is_refused_and_creates_nothing(payq_db: payq.Database) -> None:
    payq_db.enqueue("sms.send", {}, queue="sms")
    for action in ("pause", "resume"):
        refused = _cli(payq_db, "queues", action, "no-such-queue")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith("payq: ") and "no-such-queue" in line
        assert refused.stdout == ""
    assert [q.name for q in payq_db.queues.list()] == ["sms"]
    paused = _cli(payq_db, "queues", "pause", "sms")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert payq_db.queues.get("sms").paused is True


# ---------------------------------------------------------------- tasks show


def test_tasks_show_lists_the_operators_actions(payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("sms.send", {"to": "+86"}).task_id
    payq_db.tasks.cancel(task_id, actor="ops:lin", note="sent by hand")
    payq_db.tasks.retry(task_id, actor="ops:eve", note="")

    text = _cli(payq_db, "tasks", "show", str(task_id))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    actions = lines[lines.index("actions:") + 1:]
    assert len(actions) == 2
    assert "cancel" in actions[0] and "by ops:lin" in actions[0] and '"sent by hand"' in actions[0]
    assert "retry" in actions[1] and "by ops:eve" in actions[1]

    shown = json.loads(_cli(payq_db, "tasks", "show", str(task_id), "--json").stdout)
    assert [(a["action"], a["actor"], a["note"]) for a in shown["actions"]] == [
        ("cancel", "ops:lin", "sent by hand"), ("retry", "ops:eve", "")]
    assert all(a["created_at"] for a in shown["actions"])


# ---------------------------------------------------------------- options and --json


def test_global_options_work_after_the_command(payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("sms.send", {}, queue="sms").task_id
    listing = _cli_after(payq_db, "tasks", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [t["id"] for t in json.loads(listing.stdout)] == [task_id]
    queues = _cli_after(payq_db, "queues", "list", "--json")
    assert queues.returncode == 0, queues.stderr
    assert [q["name"] for q in json.loads(queues.stdout)] == ["sms"]


def test_every_listing_and_action_takes_json(payq_db: payq.Database) -> None:
    queues = _cli(payq_db, "queues", "--json")
    assert queues.returncode == 0, queues.stderr
    assert json.loads(queues.stdout) == []
    enqueued = _cli(payq_db, "enqueue", "sms.send", "--queue", "sms", "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    task_id = json.loads(enqueued.stdout)["task_id"]
    assert json.loads(enqueued.stdout) == {"task_id": task_id, "created": True}
    # Before the command or after it, --json means the same.
    assert [q["name"] for q in json.loads(_cli(payq_db, "--json", "queues").stdout)] == ["sms"]
    cancel = _cli(payq_db, "tasks", "cancel", str(task_id), "--actor", "ops:lin", "--json")
    assert json.loads(cancel.stdout) == {"task_id": task_id, "action": "cancel", "state": "cancelled"}
    retry = _cli(payq_db, "tasks", "retry", str(task_id), "--actor", "ops:lin", "--json")
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout) == {"task_id": task_id, "action": "retry", "state": "pending"}
    paused = json.loads(_cli(payq_db, "queues", "pause", "sms", "--json").stdout)
    assert paused["name"] == "sms" and paused["paused"] is True
    limited = json.loads(_cli(payq_db, "queues", "set", "sms", "--concurrency", "2", "--json").stdout)
    assert limited["concurrency"] == 2
    assert json.loads(_cli(payq_db, "stats", "--json").stdout) == {"sms": {"pending": 1}}
    migrated = json.loads(_cli(payq_db, "migrate", "--json").stdout)
    assert migrated["schema"] == payq_db.schema and migrated["applied"] == []
    assert json.loads(_bare("version", "--json").stdout) == {"version": payq.__version__}
    both = _cli(payq_db, "stats", "--json", "--prometheus")
    assert both.returncode == 64 and "cannot be combined" in both.stderr


def test_version_option_and_a_bare_payq_prints_help() -> None:
    version = _bare("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"payq {payq.__version__}"
    bare = _bare()
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: payq") and "examples:" in bare.stdout and bare.stderr == ""
    assert "payq tasks retry 42 --actor" in bare.stdout


def _parsers(parser: argparse.ArgumentParser, path: List[str]) -> Iterator[Any]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, path + [name])


def test_every_option_has_help_and_defaults_are_shown() -> None:
    missing = []
    for path, parser in _parsers(_parser(), ["payq"]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    enqueue = _bare("enqueue", "--help").stdout
    assert re.search(r"--queue QUEUE\s+the queue to put it on \(default: default\)", enqueue), enqueue
    assert "(default: 10)" in enqueue
    # The global options are listed (and accepted) after a command too.
    assert "--dsn DSN" in _bare("tasks", "list", "--help").stdout


# ---------------------------------------------------------------- finished tasks tell the truth


def _claim(db: payq.Database, queue: str = "default") -> Any:
    [task] = core.outbox_claim(db._core, queue, "test-worker", 1)
    return task


def _complete(db: payq.Database, task: Any, outcome: str, error: str) -> Any:
    return core.outbox_complete(db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                                outcome=outcome, result_json="null", error=error, retry_after_ms=3_600_000,
                                worker_id="test-worker", duration_ms=3)


def test_a_task_that_dies_on_a_retry_never_shows_a_run_at_after_it_finished(payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("sms.send", {}, max_attempts=1).task_id
    _complete(payq_db, _claim(payq_db), "retry", "provider 500")
    task = payq_db.tasks.get(task_id)
    assert task.state == "dead" and task.finished_at is not None
    assert task.run_at <= task.finished_at
    shown = json.loads(_cli(payq_db, "tasks", "show", str(task_id), "--json").stdout)
    assert shown["run_at"] <= shown["finished_at"]


def test_a_task_resolved_as_applied_has_no_error(payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("payout", {}, max_attempts=1).task_id
    _complete(payq_db, _claim(payq_db), "unknown", "timeout after sending")
    task = payq_db.tasks.get(task_id)
    assert task.state == "needs_review" and task.error == "timeout after sending"
    assert task.finished_at is None or task.run_at <= task.finished_at
    payq_db.tasks.resolve(task_id, applied=True, actor="ops:lin", note="provider shows it paid")
    task = payq_db.tasks.get(task_id)
    assert task.state == "succeeded" and task.error is None
    # The attempt keeps what happened to it.
    assert [a.error for a in payq_db.tasks.attempts(task_id)] == ["timeout after sending"]


# ---------------------------------------------------------------- the demo


def test_the_demo_runs_in_its_own_schema_and_uses_no_carriage_return_off_a_terminal(payq_dsn: str) -> None:
    def drop() -> None:
        with fresh_schema(payq_dsn, prefix="demo_cleanup", migrate=False) as db, db.transaction() as t:
            t.execute("DROP SCHEMA IF EXISTS payq_demo CASCADE")

    drop()
    try:
        ran = subprocess.run([sys.executable, "-m", "payq", "--dsn", payq_dsn, "demo", "--wallets", "3",
                              "--withdrawals", "12", "--threads", "2"], capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "\r" not in ran.stdout
        assert "migrating schema 'payq_demo'" in ran.stdout
        assert "settled (100%)" in ran.stdout
        demo = payq.connect(payq_dsn, schema="payq_demo")
        queues = [q.name for q in demo.queues.list()]
        assert any(name.startswith("payouts-") for name in queues), queues
        # Its alerts were handled, none left waiting.
        alerts = demo.tasks.stats().get("payq.alerts", {})
        assert alerts.get("pending", 0) == 0 and alerts.get("running", 0) == 0
        # --schema names another schema, after the command as well as before it.
        with fresh_schema(payq_dsn, prefix="demo_named", migrate=False) as named:
            there = subprocess.run([sys.executable, "-m", "payq", "demo", "--wallets", "1", "--withdrawals", "0",
                                    "--threads", "1", "--dsn", payq_dsn, "--schema", named.schema],
                                   capture_output=True, text=True, timeout=300)
            assert there.returncode == 0, there.stdout + there.stderr
            assert f"migrating schema {named.schema!r}" in there.stdout
            assert named.ledger.accounts()  # the demo's accounts are there
    finally:
        drop()
