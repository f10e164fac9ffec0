"""Reading an account never creates one: ``get_account`` by id or by owner
and currency, in Python and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import payq


def _cli(db: payq.Database, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, *args],
                          capture_output=True, text=True, timeout=120)


def test_get_account_by_owner_reads_and_never_creates(payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    alice = ledger.account("user:alice", "CNY", "wallets")
    assert ledger.get_account("user:alice", "CNY", "wallets") == alice
    assert ledger.get_account(alice) == alice and ledger.get_account(alice.id) == alice
    for owner, currency, namespace in (("user:bob", "CNY", "default"), ("user:alice", "USD", "wallets"),
                                       ("user:alice", "CNY", "default")):
        with pytest.raises(payq.UnknownAccount, match="no account of owner"):
            ledger.get_account(owner, currency, namespace)
        assert ledger.find_account(owner, currency, namespace) is None
    assert [a.id for a in ledger.accounts()] == [alice.id]  # looking created nothing
    with pytest.raises(payq.InvalidArgument):
        ledger.get_account("user:alice")  # an owner needs its currency
    with pytest.raises(payq.InvalidArgument):
        ledger.get_account(alice.id, "CNY")


def test_cli_ledger_account_shows_one_account_and_creates_none(payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "12.34", key="fund")
    shown = _cli(payq_db, "ledger", "account", "user:alice", "CNY", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == alice.id and json.loads(shown.stdout)["balance"] == "12.34"
    table = _cli(payq_db, "ledger", "account", "world", "CNY", "--namespace", "system")
    assert table.returncode == 0 and "-12.34 CNY" in table.stdout
    missing = _cli(payq_db, "ledger", "account", "user:nobody", "CNY")
    assert missing.returncode == 2 and missing.stderr.startswith("payq: UnknownAccount: ")
    assert sorted(a.id for a in ledger.accounts()) == sorted([world.id, alice.id])
