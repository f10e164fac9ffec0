"""The examples that pay through payq's built-in HTTP handler
(examples/withdrawal_to_wallet.py, examples/paid_api_resale.py), run as
their users run them: a subprocess against the test cluster on a fresh
schema, then the database checked from outside. Each example runs its fake
providers in its own process and checks them itself (exit status 1 if the
provider's record and the ledger disagree); here the database must tell
the same story."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Dict, Iterator, List

import pytest

import payq
from payq import Money
from payq.testing import fresh_schema
from test_examples import EXAMPLES, RUN_S_MAX, explain, query, run_example

HTTP_EXAMPLES = ["withdrawal_to_wallet.py", "paid_api_resale.py"]


@pytest.fixture
def example_db(payq_dsn: str) -> Iterator[payq.Database]:
    with fresh_schema(payq_dsn, prefix="exh") as db:
        yield db


def tasks_by_unique_key(db: payq.Database, prefix: str) -> Dict[str, payq.Task]:
    found = [t for t in db.tasks.list(limit=1000) if (t.unique_key or "").startswith(prefix)]
    return {str(t.unique_key): t for t in found}


def outcomes(db: payq.Database, task: payq.Task) -> List[str]:
    return [a.outcome for a in db.tasks.attempts(task.id)]


def holds(db: payq.Database, prefix: str) -> Dict[str, str]:
    """{hold key: status} of the holds whose key starts with ``prefix``."""
    rows = query(db, "SELECT key, status FROM @schema@.hold WHERE starts_with(key, $1) ORDER BY key", [prefix])
    return {str(key): str(status) for key, status in rows}


def busiest_window(db: payq.Database, queue: str, window: timedelta) -> int:
    """The most starts of ``queue`` in any window of that length."""
    # The fullest window ends at a start: count back from each one.
    rows = query(db, "SELECT (SELECT count(*) FROM @schema@.queue_start b WHERE b.queue = $1 "
                     "        AND b.started_at <= s.at AND b.started_at > s.at - $2::bigint * interval '1 millisecond') "
                     "FROM (SELECT DISTINCT started_at AS at FROM @schema@.queue_start WHERE queue = $1) s",
                 [queue, window // timedelta(milliseconds=1)])
    assert rows, f"no starts recorded for {queue}"
    return max(int(str(n)) for n, in rows)


# ---------------------------------------------------------------- story 1: withdrawals to a wallet


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


PAID = {"W-1": "120.00", "W-4": "200.00", "W-5": "30.00", "W-6": "60.00", "W-7": "90.00"}
REFUSED = {"W-2": "ACCOUNT_INVALID", "W-3": "NOTENOUGH"}


def assert_withdrawals_settled_once(db: payq.Database, run_id: str) -> None:
    prefix = f"wd/{run_id}/"
    tasks = tasks_by_unique_key(db, prefix)
    assert sorted(tasks) == sorted(prefix + n for n in (*PAID, *REFUSED))
    by_number = {key[len(prefix):]: task for key, task in tasks.items()}
    for number in PAID:
        assert by_number[number].state == "succeeded", (number, by_number[number])
    for number, code in REFUSED.items():
        task = by_number[number]
        assert task.state == "dead" and outcomes(db, task) == ["fail"], (number, task)
        assert code in str(task.error)
    assert outcomes(db, by_number["W-1"]) == ["success"]
    assert outcomes(db, by_number["W-5"]) == ["unknown", "success"]  # a 500, then paid with the same key
    assert outcomes(db, by_number["W-6"]) == ["retry", "success"]  # 429
    # W-4's answer was lost after the provider paid; the status check on
    # the next attempt settled it, unless the (delayed) callback came first.
    callback_actor = f"callback:fake-wallet-{run_id}"
    w4 = by_number["W-4"]
    w4_attempts = db.tasks.attempts(w4.id)
    by_status_check = ([a.outcome for a in w4_attempts] == ["unknown", "success"]
                       and "timeout" in str(w4_attempts[0].error) and w4.result.get("via") == "status_query")
    assert by_status_check or [a.actor for a in db.tasks.actions(w4.id)] == [callback_actor]
    # W-7 had one attempt, whose answer was lost: only its callback could settle it.
    w7 = by_number["W-7"]
    assert [a.actor for a in db.tasks.actions(w7.id)] == [callback_actor]
    assert len(db.tasks.attempts(w7.id)) == 1

    assert holds(db, prefix) == {**{f"{prefix}{n}/hold": "captured" for n in PAID},
                                 **{f"{prefix}{n}/hold": "released" for n in REFUSED}}
    ledger = db.ledger
    namespace = f"wallet-{run_id}"
    clearing = ledger.find_account("provider-clearing", "CNY", namespace)
    assert clearing is not None and clearing.balance == cny("500.00")  # the five payouts, once each
    customers = {"W-1": "ada", "W-2": "ben", "W-3": "cy", "W-4": "dee", "W-5": "eve", "W-6": "fay", "W-7": "gus"}
    for number, customer in customers.items():
        wallet = ledger.find_account(f"customer:{customer}", "CNY", namespace)
        assert wallet is not None and wallet.held == cny("0.00")
        assert wallet.balance == cny("500.00") - cny(PAID.get(number, "0.00")), customer
    # One event per withdrawal in the inbox, none contradicting the ledger.
    events = {str(key): str(effect) for key, effect in query(
        db, "SELECT task_key, effect FROM @schema@.inbox_event WHERE provider = $1", [f"fake-wallet-{run_id}"])}
    assert sorted(events) == sorted(tasks)
    assert events[f"{prefix}W-7"] == "settled_success"
    assert set(events.values()) <= {"settled_success", "already_settled"}
    assert ledger.audit().ok


def test_withdrawal_to_wallet_settles_every_withdrawal_once(example_db):
    done = run_example("withdrawal_to_wallet.py", example_db, "--run-id", "w1", dsn_in_environment=True)
    assert done.returncode == 0, explain(done)
    assert "OK:" in done.stdout and "BROKEN" not in done.stdout
    assert_withdrawals_settled_once(example_db, "w1")

    # A second run on the same schema: its own accounts, keys and inbox provider name.
    again = run_example("withdrawal_to_wallet.py", example_db, "--run-id", "w2")
    assert again.returncode == 0, explain(again)
    assert_withdrawals_settled_once(example_db, "w2")
    assert_withdrawals_settled_once(example_db, "w1")

    # The same run id again: its provider died with its process, so it is refused.
    reused = run_example("withdrawal_to_wallet.py", example_db, "--run-id", "w1")
    assert reused.returncode == 2 and "used before" in reused.stderr, explain(reused)


# ---------------------------------------------------------------- story 2: a paid API resold for points


def test_paid_api_resale_charges_each_request_at_most_once(example_db):
    done = run_example("paid_api_resale.py", example_db, "--run-id", "r1")
    assert done.returncode == 0, explain(done)
    assert "OK:" in done.stdout and "BROKEN" not in done.stdout
    # POINTS was defined by the example's process; reading tasks and
    # accounts in POINTS here needs it registered in this process too
    # (payq reads custom currencies from the database only when opening
    # an account). The same exponent again is a no-op.
    ledger = example_db.ledger
    ledger.define_currency("POINTS", 0)
    prefix = "api/r1/"
    tasks = tasks_by_unique_key(example_db, prefix)
    geo = [f"G-{i}" for i in range(1, 13)]
    kyc = [f"K-{i}" for i in range(1, 6)]
    # G-1 was sent twice and K-1 asked again: one task each. K-6 was refused
    # for lack of points: no task.
    assert sorted(tasks) == sorted(prefix + n for n in (*geo, *kyc))
    refunded = {"K-3", "K-4"}
    for number in (*geo, *kyc):
        task = tasks[prefix + number]
        assert task.queue == f"example.api.{'geo' if number in geo else 'kyc'}.r1"
        if number in refunded:
            assert task.state == "dead", task
        else:
            assert task.state == "succeeded", task
            assert task.result["body"]["return_code"] == "SUCCESS"  # the provider's answer, stored
    assert outcomes(example_db, tasks[prefix + "K-3"])[-1] == "fail"
    assert "ACCOUNT_INVALID" in str(tasks[prefix + "K-3"].error)
    assert outcomes(example_db, tasks[prefix + "K-4"]) == ["retry"] * 6
    assert "QUOTA_EXCEEDED" in str(tasks[prefix + "K-4"].error)
    # Each provider answered each request once: distinct answers per provider.
    for names in (geo, kyc):
        answers = [tasks[prefix + n].result["body"]["payout_id"] for n in names if n not in refunded]
        assert len(set(answers)) == len(answers)

    # One hold per request: captured if answered, released (refunded) if not.
    assert holds(example_db, prefix) == {f"{prefix}{n}/hold": ("released" if n in refunded else "captured")
                                         for n in (*geo, *kyc)}
    namespace = "resale-r1"

    def points(owner: str) -> Money:
        account = ledger.find_account(owner, "POINTS", namespace)
        assert account is not None and account.held == Money(0, "POINTS"), owner
        return account.balance

    assert points("user:ada") == Money(100 - 8 * 2 - 2 * 10, "POINTS")
    assert points("user:ben") == Money(50 - 4 * 2, "POINTS")  # K-3 and K-4 refunded
    assert points("user:cy") == Money(12 - 10, "POINTS")
    assert points("spent:geo") == Money(12 * 2, "POINTS")
    assert points("spent:kyc") == Money(3 * 10, "POINTS")
    assert points("points-issued") == Money(-162, "POINTS")  # every point issued is accounted for
    sales = ledger.find_account("points-sales", "CNY", namespace)
    assert sales is not None and sales.balance == Money("16.20", "CNY")

    # Each provider's queue kept its rate limit, retries included.
    for name, limit in (("geo", 5), ("kyc", 3)):
        queue = f"example.api.{name}.r1"
        assert example_db.queues.get(queue).rate == (limit, timedelta(seconds=1))
        assert busiest_window(example_db, queue, timedelta(seconds=1)) <= limit
    assert ledger.audit().ok


@pytest.mark.parametrize("name", HTTP_EXAMPLES)
def test_http_examples_refuse_a_bad_command_line(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), "--no-such-option"], capture_output=True,
                          text=True, timeout=RUN_S_MAX)
    assert done.returncode == 2 and "usage:" in done.stderr
