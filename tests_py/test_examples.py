"""The runnable examples in examples/, run as their users run them: a
subprocess against the test cluster on a fresh schema, then the database
(and the fake provider) checked from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

import payq
from payq import Money
from payq.database import Row, SqlValue
from payq.testing import FakeProvider, fresh_schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUN_S_MAX = 120


@pytest.fixture
def example_db(payq_dsn: str) -> Iterator[payq.Database]:
    with fresh_schema(payq_dsn, prefix="ex") as db:
        yield db


def run_example(name: str, db: payq.Database, *args: str, crash_at: Optional[str] = None,
                dsn_in_environment: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PAYQ_EXAMPLE_CRASH_AT", "PAYQ_DSN")}
    if crash_at is not None:
        env["PAYQ_EXAMPLE_CRASH_AT"] = crash_at
    where = ["--schema", db.schema]
    if dsn_in_environment:
        env["PAYQ_DSN"] = db.dsn
    else:
        where = ["--dsn", db.dsn, *where]
    return subprocess.run([sys.executable, str(EXAMPLES / name), *where, *args], capture_output=True, text=True,
                          env=env, timeout=RUN_S_MAX)


def explain(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def query(db: payq.Database, sql: str, params: Sequence[SqlValue] = ()) -> List[Row]:
    with db.transaction() as t:
        return t.execute(sql, params)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


# ---------------------------------------------------------------- story 4: transfers with fees and limits


def test_transfer_with_limits_commits_what_passed_and_keeps_the_limits(example_db):
    done = run_example("transfer_with_limits.py", example_db, "--run-id", "t1", dsn_in_environment=True)
    assert done.returncode == 0, explain(done)
    assert "OK:" in done.stdout and "BROKEN" not in done.stdout
    ledger = example_db.ledger

    def account(owner: str, part: str) -> payq.Account:
        found = ledger.find_account(owner, "CNY", f"shop-t1-{part}")
        assert found is not None, owner
        return found

    ada = account("customer:ada", "customers")
    assert ada.balance == cny("475.00") and ada.held == cny("0.00")
    assert account("customer:ben", "customers").balance == cny("20.00")
    assert account("merchant:m1", "merchants").balance == cny("147.15")
    assert account("merchant:m2", "merchants").balance == cny("0.00")
    assert account("merchant:m3", "merchants").balance == cny("196.70")
    assert account("courier:7", "merchants").balance == cny("5.00")
    assert account("platform-fees", "system").balance == cny("6.15")
    paid = ledger.find_transaction("shop/t1/A-1/payment")
    assert paid is not None and [str(e.amount) for e in paid.entries] == ["-120.00 CNY", "117.90 CNY", "2.10 CNY"]
    for declined in ("shop/t1/A-2/payment", "shop/t1/B-1/payment", "shop/t1/A-3/tip"):
        assert ledger.find_transaction(declined) is None, declined
    # The limits stay configured: Ada sent 325.00 today, another 200.00 passes 500.00.
    with pytest.raises(payq.LimitExceeded):
        ledger.transfer(ada, account("merchant:m2", "merchants"), "200.00", key="after-the-example")
    assert ledger.audit().ok

    again = run_example("transfer_with_limits.py", example_db, "--run-id", "t2")
    assert again.returncode == 0, explain(again)
    assert ledger.audit().ok


# ---------------------------------------------------------------- story 3: a multi-step payment


PAID_KEY, REFUSED_KEY = "wd/m1/W-1", "wd/m1/W-2"


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(seed=11) as p:
        yield p


def run_payment(db: payq.Database, provider: FakeProvider, crash_at: Optional[str] = None
                ) -> subprocess.CompletedProcess:
    return run_example("multi_step_payment.py", db, "--run-id", "m1", "--provider-url", provider.url,
                       crash_at=crash_at)


def attempts_by_kind(db: payq.Database) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for kind, outcome in query(db, "SELECT k.kind, a.outcome FROM @schema@.task_attempt a "
                                   "JOIN @schema@.task k ON k.id = a.task_id ORDER BY a.task_id, a.attempt"):
        out.setdefault(str(kind), []).append(str(outcome))
    return out


def assert_paid_exactly_once(db: payq.Database, provider: FakeProvider) -> None:
    # The provider: W-1's money moved once, W-2 (a closed account) never.
    assert provider.applied == {PAID_KEY: 12_000}
    assert provider.applied_count(PAID_KEY) == 1 and provider.applied_count(REFUSED_KEY) == 0
    refused = provider.result(REFUSED_KEY)
    assert refused is not None and refused["return_code"] == "ACCOUNT_INVALID"
    # The ledger: captured once into clearing, released once, audit clean.
    ledger = db.ledger
    clearing = ledger.find_account("provider-clearing", "CNY", "withdraw-m1")
    wallet = ledger.find_account("customer:ada", "CNY", "withdraw-m1")
    assert clearing is not None and wallet is not None
    assert clearing.balance == cny("120.00")
    assert wallet.balance == cny("380.00") and wallet.held == cny("0.00")
    holds = {key: status for key, status in query(db, "SELECT key, status FROM @schema@.hold ORDER BY id")}
    assert holds == {f"{PAID_KEY}/hold": "captured", f"{REFUSED_KEY}/hold": "released"}
    assert ledger.audit().ok
    # One notice per order, one task per step.
    notices = query(db, "SELECT order_key, outcome FROM @schema@.example_payment_notice ORDER BY order_key")
    assert notices == [(PAID_KEY, "paid"), (REFUSED_KEY, "failed")]
    tasks = query(db, "SELECT kind, state, count(*) FROM @schema@.task WHERE queue = 'example.withdrawals.m1' "
                      "GROUP BY kind, state ORDER BY kind, state")
    assert tasks == [("payment.charge", "dead", "1"), ("payment.charge", "succeeded", "1"),
                     ("payment.notify", "succeeded", "2")]


def test_multi_step_payment_without_a_crash(example_db, provider):
    done = run_payment(example_db, provider)
    assert done.returncode == 0, explain(done)
    assert "OK:" in done.stdout
    assert_paid_exactly_once(example_db, provider)


# Where the process dies, and what the next run must have recovered from:
# a handler killed mid-call leaves an attempt that maintenance records as
# ``unknown`` once its lease ends.
CRASHES = [
    (["reserved"], None),
    (["charge_before_call"], "unknown"),
    (["charge_after_call"], "unknown"),
    (["captured"], None),
    (["notify_before_commit"], "unknown"),
    (["notified"], None),
    (["charge_after_call", "notify_before_commit"], "unknown"),
]


@pytest.mark.parametrize("crash_points, rescued", CRASHES, ids=["+".join(points) for points, _ in CRASHES])
def test_multi_step_payment_resumes_after_sigkill(example_db, provider, crash_points, rescued):
    for point in crash_points:
        crashed = run_payment(example_db, provider, crash_at=point)
        assert crashed.returncode == -signal.SIGKILL, explain(crashed)
        assert f"PAYQ_EXAMPLE_CRASH_AT={point}" in crashed.stdout, explain(crashed)
    resumed = run_payment(example_db, provider)
    assert resumed.returncode == 0, explain(resumed)
    assert "found: resuming" in resumed.stdout
    assert_paid_exactly_once(example_db, provider)
    if rescued is not None:
        assert rescued in [o for outcomes in attempts_by_kind(example_db).values() for o in outcomes]
    if "charge_after_call" in crash_points:
        # The provider answered, the process died before recording it; the
        # retry carried the same key and got the stored answer (applied once).
        assert provider.request_count(PAID_KEY) >= 2


def test_multi_step_payment_survives_provider_faults_and_a_crash(example_db, provider):
    provider.fault_next("drop_after_apply", key=PAID_KEY)
    provider.fault_next("rate_limited", key=REFUSED_KEY, retry_after_s=0)
    provider.fault_next("error_500", key=PAID_KEY)
    crashed = run_payment(example_db, provider, crash_at="notify_before_commit")
    assert crashed.returncode == -signal.SIGKILL, explain(crashed)
    resumed = run_payment(example_db, provider)
    assert resumed.returncode == 0, explain(resumed)
    assert_paid_exactly_once(example_db, provider)
    assert provider.request_count(PAID_KEY) >= 3  # dropped, 500, then the stored answer


# ---------------------------------------------------------------- story 5: typed third-party tasks


def test_typed_tasks_retry_alert_and_the_operators_resend(example_db):
    done = run_example("typed_tasks.py", example_db, "--run-id", "y1")
    assert done.returncode == 0, explain(done)
    assert "OK:" in done.stdout and "$ payq tasks retry" in done.stdout
    tasks = [t for t in example_db.tasks.list(limit=1000) if (t.unique_key or "").startswith("y1/")]
    by_kind: Dict[str, List[payq.Task]] = {}
    for task in tasks:
        by_kind.setdefault(task.kind, []).append(task)
    # Three sign-ups and a duplicate: three tasks of each kind, not four.
    assert sorted(by_kind) == ["crm.contact_push", "sms.welcome"]
    assert len(by_kind["crm.contact_push"]) == 3 and len(by_kind["sms.welcome"]) == 3
    assert sorted(t.state for t in by_kind["sms.welcome"]) == ["dead", "succeeded", "succeeded"]
    for task in by_kind["crm.contact_push"]:
        assert task.state == "succeeded" and task.queue == "example.crm"
        assert [a.outcome for a in example_db.tasks.attempts(task.id)] == ["retry", "retry", "retry", "success"]
    # The operator's re-sends went through the CLI and were recorded.
    crm_ids = sorted(t.id for t in by_kind["crm.contact_push"])
    actions = query(example_db, "SELECT task_id, action, actor FROM @schema@.task_action "
                                "WHERE action = 'retry' ORDER BY task_id")
    assert actions == [(str(i), "retry", "ops:lin") for i in crm_ids]
    # Alerts: before each push's last try, when it died, and for the dead SMS.
    alerts = example_db.tasks.list(queue="payq.alerts", limit=1000)
    assert all(a.state == "succeeded" for a in alerts)
    dead_sms = [t.id for t in by_kind["sms.welcome"] if t.state == "dead"]
    assert sorted((a.payload["task_id"], a.payload["reason"]) for a in alerts) == sorted(
        [(i, r) for i in crm_ids for r in ("last_attempt_next", "dead")] + [(dead_sms[0], "dead")])
    cron = query(example_db, "SELECT schedule, time_zone, queue, kind FROM @schema@.cron_entry WHERE name = $1",
                 ["example.crm-nightly-sync"])
    assert cron == [("0 3 * * *", "Asia/Shanghai", "example.crm", "crm.nightly_sync")]


@pytest.mark.parametrize("name", ["transfer_with_limits.py", "multi_step_payment.py", "typed_tasks.py"])
def test_examples_refuse_a_bad_command_line(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), "--no-such-option"], capture_output=True,
                          text=True, timeout=RUN_S_MAX)
    assert done.returncode == 2 and "usage:" in done.stderr
