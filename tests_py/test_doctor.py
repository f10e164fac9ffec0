"""payq doctor (python/payq/doctor.py): a healthy set-up passes, and each
kind of broken one is named, in the human output, in --json and in the
exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, List

import pytest

import payq
from payq.doctor import diagnose
from payq.embedded import EmbeddedServer
from payq.testing import fresh_schema
from payq.testing.pgbouncer import PgBouncer, pgbouncer_binary


def _doctor(*args: str, env_extra: Dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PAYQ_DSN", "PAYQ_POOLER")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "payq", *args, "doctor"], env=env, capture_output=True, text=True,
                          timeout=120)


def _statuses(report: Dict[str, Any]) -> Dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


@pytest.fixture(scope="module")
def durable_dsn() -> Iterator[str]:
    """A cluster as production runs one (fsync on), unlike the throwaway test
    clusters, which the doctor rightly calls broken."""
    base = tempfile.mkdtemp(prefix="payq-doc-", dir="/tmp")
    os.chmod(base, 0o755)
    server = EmbeddedServer(os.path.join(base, "home"), durable=True)
    server.remove_when_process_exits()
    try:
        yield server.up()
    finally:
        server.down()
        shutil.rmtree(base, ignore_errors=True)


def test_healthy_setup_passes_with_every_check_and_exit_0(durable_dsn: str) -> None:
    with fresh_schema(durable_dsn, prefix="doc") as db:
        # A live worker renews the maintenance lease at every tick.
        with db.transaction() as tx:
            tx.execute("INSERT INTO @schema@.maintenance_lease (holder, expires_at) "
                       "VALUES ('worker-7', now() + interval '30 seconds')")
        result = _doctor("--json", "--dsn", durable_dsn, "--schema", db.schema)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    statuses = _statuses(report)
    for name in ("versions", "ca_bundle", "dsn", "server", "schema", "fsync", "synchronous_commit", "pooler",
                 "clock_skew", "workers", "queues"):
        assert statuses[name] == "ok", (name, report)
    checks = {check["name"]: check for check in report["checks"]}
    versions = checks["versions"]["data"]
    assert versions["payq"] == payq.__version__
    assert versions["libpqxx"].startswith("6.4")
    assert versions["libpq"].split(".")[0].isdigit()
    assert versions["libcurl"].count(".") == 2
    assert versions["server"] == checks["server"]["data"]["version"]
    assert checks["dsn"]["data"]["source"] == "argument"
    assert checks["workers"]["data"]["holder"] == "worker-7"
    assert abs(checks["clock_skew"]["data"]["skew_seconds"]) < 2


def test_human_output_says_where_the_dsn_came_from(durable_dsn: str) -> None:
    with fresh_schema(durable_dsn, prefix="doc") as db:
        result = _doctor("--schema", db.schema, env_extra={"PAYQ_DSN": durable_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(from PAYQ_DSN)" in result.stdout
    assert "payq doctor: nothing wrong found" in result.stdout
    assert "libpqxx 6.4" in result.stdout


def test_unreachable_server_fails_with_exit_1_and_no_traceback() -> None:
    result = _doctor("--dsn", "host=/nonexistent-payq-doctor port=5999 dbname=x")
    assert result.returncode == 1
    assert "[FAIL] server" in result.stdout
    assert "Traceback" not in result.stderr


def test_unmigrated_schema_and_fsync_off_are_failures(payq_dsn: str) -> None:
    # The session's throwaway cluster runs with fsync off: right for tests,
    # wrong for money.
    with fresh_schema(payq_dsn, prefix="doc", migrate=False) as db:
        report = diagnose(payq_dsn, schema=db.schema)
    assert not report.ok
    assert report.check("schema").status == "fail"
    assert "payq migrate" in report.check("schema").detail
    assert report.check("fsync").status == "fail"
    assert report.check("synchronous_commit").status == "warn"


def test_paused_queue_and_due_tasks_without_a_worker_are_named(payq_dsn: str) -> None:
    with fresh_schema(payq_dsn, prefix="doc") as db:
        db.enqueue("payout", {"n": 1}, queue="payouts")
        db.queues.pause("payouts")
        report = diagnose(payq_dsn, schema=db.schema)
    queues = report.check("queues")
    assert queues.status == "warn"
    assert "payouts" in queues.detail
    assert [q["queue"] for q in queues.data["paused"]] == ["payouts"]
    workers = report.check("workers")
    assert workers.status == "warn"
    assert workers.data["tasks_due"] == 1
    assert "payq worker" in workers.detail


def test_embedded_default_not_running_is_a_failure_naming_payq_up() -> None:
    home = tempfile.mkdtemp(prefix="payq-doc-", dir="/tmp")
    try:
        result = _doctor("--json", "--home", os.path.join(home, "h"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks: List[Dict[str, Any]] = report["checks"]
    embedded = next(check for check in checks if check["name"] == "embedded")
    assert embedded["status"] == "fail"
    assert "payq up" in embedded["detail"]
    assert embedded["data"]["binaries_source"] in ("PATH", "system", "wheel")


@pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed")
def test_pooler_in_the_way_is_detected(payq_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_schema(payq_dsn, prefix="doc") as direct, PgBouncer(payq_dsn, pool_mode="transaction") as bouncer:
        unconfigured = diagnose(bouncer.dsn, schema=direct.schema)
        monkeypatch.setenv("PAYQ_POOLER", "transaction")
        configured = diagnose(bouncer.dsn, schema=direct.schema)
        monkeypatch.delenv("PAYQ_POOLER")
        straight = diagnose(payq_dsn, schema=direct.schema)
    assert unconfigured.check("pooler").status == "warn"
    assert "PAYQ_POOLER=transaction" in unconfigured.check("pooler").detail
    assert unconfigured.check("pooler").data["detected"] is True
    assert configured.check("pooler").status == "ok"
    assert straight.check("pooler").data["detected"] is False
