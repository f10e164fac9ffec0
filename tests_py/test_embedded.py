import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import payq
from payq.embedded import EmbeddedServer


@pytest.fixture
def home():
    base = tempfile.mkdtemp(prefix="payq-emb-", dir="/tmp")
    os.chmod(base, 0o755)
    yield os.path.join(base, "home")
    EmbeddedServer(os.path.join(base, "home"), durable=False).down()
    shutil.rmtree(base, ignore_errors=True)


def test_embedded_default_starts_is_reused_stops_and_is_found_again(home, monkeypatch):
    monkeypatch.delenv("PAYQ_DSN", raising=False)
    monkeypatch.setenv("PAYQ_HOME", home)
    db = payq.connect()  # no DSN anywhere: the embedded default, migrated
    assert db.dsn_source == "embedded"
    assert db.schema_version() >= 1
    server = EmbeddedServer(home)
    assert server.status().running
    again = payq.connect()
    assert again.dsn == db.dsn
    server.down()
    assert not server.status().running
    assert server.status().initialized
    found = payq.connect()
    assert found.schema_version() >= 1  # the data survived the restart


def test_cli_up_status_migrate_down(home):
    env = dict(os.environ, PAYQ_HOME=home)
    env.pop("PAYQ_DSN", None)

    def payq_cli(*args):
        return subprocess.run([sys.executable, "-m", "payq", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    assert payq_cli("status").returncode == 3
    up = payq_cli("up")
    assert up.returncode == 0, up.stderr
    assert payq_cli("status").returncode == 0
    migrate = payq_cli("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "version" in migrate.stdout
    assert payq_cli("down").returncode == 0
    assert payq_cli("status").returncode == 3


def test_cli_reports_typed_errors_without_traceback(home):
    result = subprocess.run([sys.executable, "-m", "payq", "--dsn", "nonsense", "migrate"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "ConfigError" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_on_the_embedded_default(home):
    env = dict(os.environ, PAYQ_HOME=home)
    env.pop("PAYQ_DSN", None)
    result = subprocess.run([sys.executable, "-m", "payq", "demo"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "payq demo report" in result.stdout


def test_ledger_cli_lists_audits_and_shows_history(home):
    env = dict(os.environ, PAYQ_HOME=home)
    env.pop("PAYQ_DSN", None)

    def payq_cli(*args):
        return subprocess.run([sys.executable, "-m", "payq", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    demo = payq_cli("demo", "--withdrawals", "200", "--wallets", "20", "--threads", "4")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "conserved:                yes" in demo.stdout
    assert "ledger audit:             clean" in demo.stdout
    assert "expired under payouts:    0 hold(s)" in demo.stdout
    assert "OK: no money lost or paid twice" in demo.stdout
    accounts = payq_cli("ledger", "accounts", "--json", "--limit", "5")
    assert accounts.returncode == 0, accounts.stderr
    assert len(json.loads(accounts.stdout)) == 5
    history = payq_cli("ledger", "history", str(json.loads(accounts.stdout)[3]["id"]))
    assert history.returncode == 0 and "CNY" in history.stdout
    audit = payq_cli("ledger", "audit")
    assert audit.returncode == 0 and "clean" in audit.stdout
    # Corrupt a balance behind payq's back: the audit must fail loudly.
    db = payq.connect(EmbeddedServer(home).dsn)
    with db.transaction() as t:
        t.execute("UPDATE @schema@.account SET balance = balance + 1 WHERE id = (SELECT min(id) FROM @schema@.account)")
    audit = payq_cli("ledger", "audit")
    assert audit.returncode == 1
    assert "VIOLATION" in audit.stdout
