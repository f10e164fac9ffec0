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
    # The demo writes into a schema of its own (payq_demo), not the default one.
    accounts = payq_cli("--schema", "payq_demo", "ledger", "accounts", "--json", "--limit", "5")
    assert accounts.returncode == 0, accounts.stderr
    assert len(json.loads(accounts.stdout)) == 5
    history = payq_cli("--schema", "payq_demo", "ledger", "history", str(json.loads(accounts.stdout)[3]["id"]))
    assert history.returncode == 0 and "CNY" in history.stdout
    audit = payq_cli("--schema", "payq_demo", "ledger", "audit")
    assert audit.returncode == 0 and "clean" in audit.stdout
    # Corrupt a balance behind payq's back: the audit must fail loudly.
    db = payq.connect(EmbeddedServer(home).dsn, schema="payq_demo")
    with db.transaction() as t:
        t.execute("UPDATE @schema@.account SET balance = balance + 1 WHERE id = (SELECT min(id) FROM @schema@.account)")
    audit = payq_cli("--schema", "payq_demo", "ledger", "audit")
    assert audit.returncode == 1
    assert "VIOLATION" in audit.stdout


# ---------------------------------------------------------------- which PostgreSQL binaries

def _fake_server_binaries(directory, major):
    """initdb and pg_ctl that only answer --version: enough to see which
    directory the search picks (the real wheel runs in tests_py/test_wheel.py)."""
    os.makedirs(directory, exist_ok=True)
    for name in ("initdb", "pg_ctl"):
        path = os.path.join(directory, name)
        with open(path, "w") as script:
            script.write(f"#!/bin/sh\necho '{name} (PostgreSQL) {major}.1'\n")
        os.chmod(path, 0o755)
    return directory


def _binaries_in_namespace(wheel_dir, hide_system):
    """payq.embedded.postgres_binaries() in a child whose PATH has no
    PostgreSQL and, with hide_system, a mount namespace where
    /usr/lib/postgresql is empty; wheel_dir is registered as the wheel's."""
    code = ("import json, sys; from payq import embedded; from payq._native import core; "
            "core.postgres_wheel_dir_set(sys.argv[1])\n"
            "try:\n    print(json.dumps(embedded.postgres_binaries()))\n"
            "except Exception as exc:\n    print(json.dumps([type(exc).__name__, str(exc)]))")
    command = [sys.executable, "-c", code, wheel_dir]
    if hide_system:
        if shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.skip("needs root and unshare to hide /usr/lib/postgresql")
        command = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /usr/lib/postgresql && exec "$@"', "sh",
                   *command]
    env = dict(os.environ, PATH="/usr/bin:/bin")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(not os.path.isdir("/usr/lib/postgresql"), reason="needs the system's PostgreSQL")
def test_system_binaries_win_over_the_wheel(tmp_path):
    wheel = _fake_server_binaries(str(tmp_path / "wheel-bin"), 18)
    directory, source = _binaries_in_namespace(wheel, hide_system=False)
    assert source == "system"
    assert directory.startswith("/usr/lib/postgresql/")


@pytest.mark.skipif(not os.path.isdir("/usr/lib/postgresql"), reason="needs a /usr/lib/postgresql to hide")
def test_wheel_binaries_serve_when_the_system_has_none(tmp_path):
    wheel = _fake_server_binaries(str(tmp_path / "wheel-bin"), 18)
    assert _binaries_in_namespace(wheel, hide_system=True) == [wheel, "wheel"]
    # Neither: the error names every way to get a server.
    kind, message = _binaries_in_namespace("", hide_system=True)
    assert kind == "ConfigError"
    assert "apt-get install postgresql-15" in message
    assert "pip install 'payq[server]'" in message


def test_status_says_which_binaries_it_uses(home):
    status = EmbeddedServer(home).status()
    assert status.binaries_source in ("PATH", "system", "wheel")
    assert os.access(os.path.join(status.binaries, "pg_ctl"), os.X_OK)


def test_cluster_of_another_major_version_is_refused_naming_the_package(home):
    # A cluster created by a PostgreSQL this machine does not have (as when
    # the system's server was removed and only the wheel's is left).
    os.makedirs(os.path.join(home, "data"))
    with open(os.path.join(home, "data", "PG_VERSION"), "w") as version:
        version.write("9999\n")
    with pytest.raises(payq.ConfigError) as refused:
        EmbeddedServer(home).up()
    assert "created by PostgreSQL 9999" in str(refused.value)
    assert "apt-get install postgresql-9999" in str(refused.value)
