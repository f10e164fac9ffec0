"""payq.testing: the bounded wait and the per-test databases of the pytest
plugin, as payq's users get them."""

from __future__ import annotations

import itertools

import pytest

import payq
from payq.testing import DATABASE_SCHEMA, WaitTimeout, fresh_database, wait_until


def test_wait_until_returns_what_the_condition_returned() -> None:
    answers = itertools.chain([None, 0, ""], itertools.repeat({"state": "succeeded"}))
    assert wait_until(lambda: next(answers), 5, interval_s=0.001) == {"state": "succeeded"}


def test_wait_until_names_what_it_waited_for_when_time_runs_out() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the payout\nprovider log: nothing received") as caught:
        wait_until(lambda: False, 0.05, interval_s=0.01, what="the payout",
                   diagnostics=lambda: "provider log: nothing received")
    assert isinstance(caught.value, AssertionError)  # a failed test, not an errored one
    assert wait_until(lambda: 0, 0.05, interval_s=0.01) == 0  # without `what`: the last value


@pytest.mark.parametrize("timeout_s, interval_s", [(0, 0.05), (-1, 0.05), (1, 0), (float("inf"), 0.05),
                                                   (float("nan"), 0.05), (True, 0.05), ("1", 0.05)])
def test_wait_until_refuses_times_that_are_not_positive_numbers(timeout_s: object, interval_s: object) -> None:
    calls = []
    with pytest.raises(payq.InvalidArgument):
        wait_until(lambda: calls.append(1), timeout_s, interval_s=interval_s)  # type: ignore[arg-type]
    assert calls == []


def test_payq_db_is_a_migrated_database_of_its_own(payq_db: payq.Database) -> None:
    with payq_db.transaction() as t:
        database = t.execute("SELECT current_database()")[0][0]
    assert database.startswith("payq_t_")
    assert payq_db.schema == DATABASE_SCHEMA
    assert payq_db.schema_version() == payq.connect(payq_db.dsn, schema="fresh_here", migrate=True).schema_version()


def test_fresh_database_is_dropped_afterwards(payq_dsn: str) -> None:
    with fresh_database(payq_dsn) as db:
        with db.transaction() as t:
            name = t.execute("SELECT current_database()")[0][0]
        db.ledger.account("user:1", "CNY")
    with fresh_database(payq_dsn) as other, other.transaction() as t:
        # A copy of the template: nothing of the first copy's account.
        assert t.execute("SELECT count(*) FROM @schema@.account")[0][0] == "0"
        assert t.execute("SELECT count(*) FROM pg_database WHERE datname = $1", [name])[0][0] == "0"
