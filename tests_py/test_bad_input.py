"""The bad-input campaign (issue 13 section 2, issue 20): careless and
hostile input at every door, each case asserting the exact typed error (the
CLI's exit status, the HTTP status) and that nothing was written.

"Nothing was written" is one helper, :func:`writes_nothing`: before and
after each case it reads every table of payq's schema (row count and a hash
of the rows) and the sums of all balances and held amounts; they must be
equal. One migrated schema serves the whole module: a case may not write, so
cases cannot disturb each other, and one that does fails naming the table.

Doors: the Python API (ledger, money, outbox, queues, connect), the
application's own connection (psycopg 3: the caller's transaction must stay
usable), the CLI (in-process, plus a few real processes for the one-line
message), the HTTP inbox (``CallbackReceiver.handle`` and its HTTP server)
and the dashboard (its WSGI application).
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

import psycopg
import pytest

import payq
from payq import Fee, Money, Settle, TaskRequest
from payq.cli import main as cli_main
from payq.dashboard import make_app
from payq.inbox import CallbackReceiver
from payq.testing import FakeProvider, fresh_schema

SECRET = "bad-input-secret"
TOKEN = "bad-input-token-0123456789abcdef"
ORIGIN = "http://127.0.0.1"
BIG = 2**63  # one beyond int64
DEEP = 10_000
PASSWORD = "hunter2-secret"


def names(cases: List[Any]) -> List[str]:
    """The case names of a table (a case is a tuple, or a pytest.param)."""
    return [case.values[0] if hasattr(case, "marks") else case[0] for case in cases]


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------- nothing written


def snapshot(db: payq.Database) -> Dict[str, Any]:
    """Every table of payq's schema (rows and a hash of their text) and the
    balance sums: what a case must leave as it found it."""
    with db.transaction() as t:
        tables = [r[0] for r in t.execute("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
                                          [db.schema])]
        digest = " UNION ALL ".join(
            f"SELECT '{name}', count(*)::text, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
            f'FROM @schema@."{name}" x' for name in tables)
        state: Dict[str, Any] = {name: (count, md5) for name, count, md5 in t.execute(digest)}
        state["balance sums"] = t.execute("SELECT coalesce(sum(balance), 0), coalesce(sum(held), 0) "
                                          "FROM @schema@.account")[0]
    return state


@contextmanager
def writes_nothing(db: payq.Database) -> Iterator[None]:
    before = snapshot(db)
    yield
    after = snapshot(db)
    changed = {name: (before.get(name), after.get(name)) for name in set(before) | set(after)
               if before.get(name) != after.get(name)}
    assert not changed, f"written: {changed}"


def refused(world: SimpleNamespace, expected: type, action: Callable[[], Any]) -> BaseException:
    """Runs ``action``: it must raise exactly ``expected`` and write nothing."""
    with writes_nothing(world.db):
        with pytest.raises(BaseException) as caught:
            action()
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
    return caught.value


# ---------------------------------------------------------------- one schema for the module


@pytest.fixture(scope="module")
def world(payq_dsn: str) -> Iterator[SimpleNamespace]:
    with fresh_schema(payq_dsn, prefix="bad") as db:
        ledger = db.ledger
        w = SimpleNamespace(db=db, dsn=payq_dsn, schema=db.schema)
        w.outside = ledger.account("world", "CNY", "system", allow_negative=True)
        w.alice = ledger.account("alice", "CNY")
        w.bob = ledger.account("bob", "CNY")
        w.fees = ledger.account("fees", "CNY", "system")
        w.carol_usd = ledger.account("carol", "USD")
        w.funding = ledger.transfer(w.outside, w.alice, "100.00", key="fund-alice")
        w.hold = ledger.hold(w.alice, "10.00", key="hold-1")
        w.pending = db.enqueue("sms.send", {"to": "+86"}, queue="sms", unique_key="u-1").task_id
        yield w


# ---------------------------------------------------------------- the Python API

L = Callable[[SimpleNamespace], Any]


def _transfer(**kwargs: Any) -> L:
    def run(w: SimpleNamespace) -> Any:
        arguments: Dict[str, Any] = {"source": w.alice, "target": w.bob, "amount": "1.00", "key": "t-new"}
        arguments.update({k: (v(w) if callable(v) else v) for k, v in kwargs.items()})
        return w.db.ledger.transfer(arguments.pop("source"), arguments.pop("target"), arguments.pop("amount"),
                                    **arguments)
    return run


def _account(*args: Any, **kwargs: Any) -> L:
    return lambda w: w.db.ledger.account(*args, **kwargs)


def _enqueue(kind: Any = "sms.send", payload: Any = None, **options: Any) -> L:
    return lambda w: w.db.enqueue(kind, {"to": "+86"} if payload is None else payload, **options)


IA, AMT, CUR = payq.InvalidArgument, payq.InvalidAmount, payq.UnknownCurrency

API_CASES: List[Tuple[str, L, type]] = [
    # owners and namespaces (issue 20 item 6)
    ("owner-none", _account(None, "CNY"), IA),
    ("owner-int", _account(5, "CNY"), IA),
    ("owner-lone-surrogate", _account("\ud800", "CNY"), IA),
    ("owner-bytes", _account(b"alice", "CNY"), IA),
    ("owner-empty", _account("", "CNY"), IA),
    ("owner-201-bytes", _account("o" * 201, "CNY"), IA),
    ("owner-nul", _account("a\x00b", "CNY"), IA),
    ("owner-newline", _account("a\nb", "CNY"), IA),
    ("namespace-none", _account("dave", "CNY", None), IA),
    ("namespace-int", _account("dave", "CNY", 7), IA),
    ("namespace-lone-surrogate", _account("dave", "CNY", "\udc80"), IA),
    ("namespace-bytes", _account("dave", "CNY", b"ns"), IA),
    ("namespace-101-bytes", _account("dave", "CNY", "n" * 101), IA),
    # currencies
    ("currency-none", _account("dave", None), IA),
    ("currency-unknown", _account("dave", "XQQ"), CUR),
    ("currency-lower-case", _account("dave", "cny"), CUR),
    ("currency-empty", _account("dave", ""), CUR),
    ("currency-lone-surrogate", _account("dave", "\ud800"), CUR),
    ("allow-negative-str", _account("dave", "CNY", allow_negative="yes"), IA),
    ("deferred-credit-int", _account("dave", "CNY", deferred_credit=1), IA),
    ("overdraft-negative", _account("dave", "CNY", overdraft=-1), AMT),
    ("overdraft-float", _account("dave", "CNY", overdraft=1.5), AMT),
    ("overdraft-text", _account("dave", "CNY", overdraft="lots"), AMT),
    ("find-account-owner-none", lambda w: w.db.ledger.find_account(None, "CNY"), IA),
    ("find-account-currency-int", lambda w: w.db.ledger.find_account("alice", 156), IA),
    ("find-account-namespace-bytes", lambda w: w.db.ledger.find_account("alice", "CNY", b"default"), IA),
    # ids
    ("account-id-2**63", lambda w: w.db.ledger.get_account(BIG), IA),
    ("account-id-zero", lambda w: w.db.ledger.get_account(0), IA),
    ("account-id-negative", lambda w: w.db.ledger.get_account(-1), IA),
    ("account-id-none", lambda w: w.db.ledger.get_account(None), IA),
    ("account-id-str", lambda w: w.db.ledger.get_account("1"), IA),
    ("account-id-bool", lambda w: w.db.ledger.get_account(True), IA),
    ("account-id-unknown", lambda w: w.db.ledger.get_account(999_999), payq.UnknownAccount),
    ("transaction-id-2**63", lambda w: w.db.ledger.transaction(BIG), IA),
    ("hold-id-none", lambda w: w.db.ledger.get_hold(None), IA),
    ("hold-id-float", lambda w: w.db.ledger.get_hold(1.0), IA),
    ("close-account-with-balance", lambda w: w.db.ledger.close_account(w.alice), payq.InvalidState),
    ("lock-none", lambda w: w.db.ledger.lock(w.alice, None), IA),
    # amounts
    ("amount-zero", _transfer(amount=0), AMT),
    ("amount-negative", _transfer(amount=-100), AMT),
    ("amount-float", _transfer(amount=1.5), AMT),
    ("amount-too-many-decimals", _transfer(amount="1.001"), AMT),
    ("amount-text", _transfer(amount="one"), AMT),
    ("amount-nan", _transfer(amount=Decimal("NaN")), AMT),
    ("amount-infinity", _transfer(amount=Decimal("Infinity")), AMT),
    ("amount-2**63", _transfer(amount=BIG), AMT),
    ("amount-none", _transfer(amount=None), AMT),
    ("amount-bool", _transfer(amount=True), AMT),
    ("amount-exponent", _transfer(amount="1e3"), AMT),
    ("amount-insufficient", _transfer(amount="1000000.00"), payq.InsufficientFunds),
    ("money-float", lambda w: Money(0.1, "CNY"), AMT),
    ("money-unknown-currency", lambda w: Money("1.00", "XQQ"), CUR),
    ("money-mixed-currencies", lambda w: Money("1.00", "CNY") + Money("1.00", "USD"), payq.CurrencyMismatch),
    # keys (issue 20 item 6: a lone-surrogate key)
    ("key-none", _transfer(key=None), IA),
    ("key-empty", _transfer(key=""), IA),
    ("key-256-bytes", _transfer(key="k" * 256), IA),
    ("key-lone-surrogate", _transfer(key="\udc80"), IA),
    ("key-bytes", _transfer(key=b"k"), IA),
    ("key-nul", _transfer(key="k\x00"), IA),
    ("key-reused-for-another-request", _transfer(source=lambda w: w.outside, target=lambda w: w.alice,
                                                  amount="5.00", key="fund-alice"), payq.IdempotencyConflict),
    # posting kinds (issue 20 items 6 and 7)
    ("kind-none", _transfer(kind=None), IA),
    ("kind-10kb", _transfer(kind="k" * 10_000), IA),
    ("kind-nul", _transfer(kind="t\x00"), IA),
    ("kind-int", _transfer(kind=3), IA),
    ("kind-lone-surrogate", _transfer(kind="\ud800x"), IA),
    # metadata (issue 20 items 6 and 11)
    ("metadata-list", _transfer(metadata=[1, 2]), IA),
    ("metadata-set-value", _transfer(metadata={"a": {1, 2}}), IA),
    ("metadata-nan", _transfer(metadata={"a": float("nan")}), IA),
    ("metadata-nul", _transfer(metadata={"note": "a\x00b"}), IA),
    ("metadata-nul-key", _transfer(metadata={"a\x00": 1}), IA),
    ("metadata-deep", _transfer(metadata={"a": nested(DEEP)}), IA),
    ("metadata-600-deep", _transfer(metadata={"a": nested(600)}), IA),
    ("metadata-17kb", _transfer(metadata={"a": "x" * 17_000}), IA),
    ("metadata-lone-surrogate", _transfer(metadata={"a": "\ud800"}), IA),
    # transfers and fees
    ("transfer-to-itself", _transfer(target=lambda w: w.alice), IA),
    ("transfer-across-currencies", _transfer(target=lambda w: w.carol_usd, amount=100), payq.CurrencyMismatch),
    ("transfer-unknown-account", _transfer(target=999_999, amount=100), payq.UnknownAccount),
    ("fee-not-a-fee", _transfer(fee=5, fee_account=lambda w: w.fees), IA),
    ("fee-without-account", _transfer(fee=Fee(bps=100)), IA),
    ("fee-payer-unknown", _transfer(fee_payer="both"), IA),
    ("fee-bps-float", lambda w: Fee(bps=2.5), IA),
    ("fee-rounding-unknown", lambda w: Fee(bps=1, rounding="sideways"), IA),
    ("fee-account-is-source", _transfer(fee=Fee(bps=100), fee_account=lambda w: w.alice), IA),
    # postings (issue 20: two legs on one account)
    ("post-legs-str", lambda w: w.db.ledger.post("legs", key="p-new"), IA),
    ("post-legs-none", lambda w: w.db.ledger.post(None, key="p-new"), IA),
    ("post-leg-triple", lambda w: w.db.ledger.post([(w.alice, -1, 0), (w.bob, 1)], key="p-new"), IA),
    ("post-one-leg", lambda w: w.db.ledger.post([(w.alice, -1)], key="p-new"), payq.Unbalanced),
    ("post-unbalanced", lambda w: w.db.ledger.post([(w.alice, -1), (w.bob, 2)], key="p-new"), payq.Unbalanced),
    ("post-zero-leg", lambda w: w.db.ledger.post([(w.alice, 0), (w.bob, 0)], key="p-new"), AMT),
    ("post-same-account-twice", lambda w: w.db.ledger.post([(w.alice, -1), (w.alice, 1)], key="p-new"), IA),
    ("post-same-account-net", lambda w: w.db.ledger.post([(w.alice, -5), (w.alice, 3), (w.bob, 2)],
                                                         key="p-new"), IA),
    ("post-65-legs", lambda w: w.db.ledger.post([(w.alice, -64)] + [(w.bob, 1)] * 64, key="p-new"), IA),
    # holds, captures, releases, reversals
    ("hold-zero", lambda w: w.db.ledger.hold(w.alice, 0, key="h-new"), AMT),
    ("hold-expires-in-int", lambda w: w.db.ledger.hold(w.alice, 1, key="h-new", expires_in=5), IA),
    ("hold-expires-negative", lambda w: w.db.ledger.hold(w.alice, 1, key="h-new",
                                                         expires_in=timedelta(seconds=-1)), IA),
    ("hold-expires-400-days", lambda w: w.db.ledger.hold(w.alice, 1, key="h-new",
                                                         expires_in=timedelta(days=400)), IA),
    ("hold-key-reused", lambda w: w.db.ledger.hold(w.alice, "20.00", key="hold-1"), payq.IdempotencyConflict),
    ("capture-into-own-account", lambda w: w.db.ledger.capture(w.hold, target=w.alice, key="c-new"), IA),
    ("capture-more-than-held", lambda w: w.db.ledger.capture(w.hold, target=w.bob, key="c-new", amount="11.00"),
     AMT),
    ("capture-hold-2**63", lambda w: w.db.ledger.capture(BIG, target=w.bob, key="c-new"), IA),
    ("capture-kind-10kb", lambda w: w.db.ledger.capture(w.hold, target=w.bob, key="c-new", kind="k" * 10_000),
     IA),
    ("release-key-none", lambda w: w.db.ledger.release(w.hold, key=None), IA),
    ("reverse-more-than-done", lambda w: w.db.ledger.reverse(w.funding, key="r-new", amount="100.01"), AMT),
    ("reverse-transaction-none", lambda w: w.db.ledger.reverse(None, key="r-new"), IA),
    ("reverse-kind-nul", lambda w: w.db.ledger.reverse(w.funding, key="r-new", kind="r\x00"), IA),
    # limits and queries
    ("limit-kind-unknown", lambda w: w.db.ledger.set_limit("weekly", 5, account=w.alice), IA),
    ("limit-count-str", lambda w: w.db.ledger.set_limit("daily_count", "5", account=w.alice), IA),
    ("limit-names-nothing", lambda w: w.db.ledger.set_limit("daily_amount", "5.00"), IA),
    ("limit-namespace-int", lambda w: w.db.ledger.set_limit("daily_amount", "5.00", namespace=3, currency="CNY"),
     IA),
    ("currency-define-lower-case", lambda w: w.db.ledger.define_currency("pts", 0), IA),
    ("currency-define-exponent-2**40", lambda w: w.db.ledger.define_currency("PTS", 2**40), IA),
    ("history-after-seq-2**63", lambda w: w.db.ledger.history(w.alice, after_seq=BIG), IA),
    ("history-limit-5000", lambda w: w.db.ledger.history(w.alice, limit=5000), IA),
    ("accounts-limit-str", lambda w: w.db.ledger.accounts(limit="10"), IA),
    ("accounts-owner-bytes", lambda w: w.db.ledger.accounts(owner=b"alice"), IA),
    # enqueue (issue 20 items 6 and 11; reserved names)
    ("task-kind-none", _enqueue(None), IA),
    ("task-kind-empty", _enqueue(""), IA),
    ("task-kind-201-bytes", _enqueue("k" * 201), IA),
    ("task-kind-lone-surrogate", _enqueue("\ud800"), IA),
    ("task-kind-reserved", _enqueue("payq.alert"), IA),
    ("task-queue-none", _enqueue(queue=None), IA),
    ("task-queue-int", _enqueue(queue=5), IA),
    ("task-queue-spaces", _enqueue(queue="bad queue!"), IA),
    ("task-queue-injection", _enqueue(queue="x'); drop table task; --"), IA),
    ("task-queue-reserved", _enqueue(queue="payq.alerts"), IA),
    ("task-queue-101-bytes", _enqueue(queue="q" * 101), IA),
    ("max-attempts-2**40", _enqueue(max_attempts=2**40), IA),
    ("max-attempts-zero", _enqueue(max_attempts=0), IA),
    ("max-attempts-1001", _enqueue(max_attempts=1001), IA),
    ("max-attempts-str", _enqueue(max_attempts="3"), IA),
    ("priority-2**40", _enqueue(priority=2**40), IA),
    ("priority-high", _enqueue(priority="high"), IA),
    ("priority-40000", _enqueue(priority=40_000), IA),
    ("delay-int", _enqueue(delay=5), IA),
    ("delay-negative", _enqueue(delay=timedelta(seconds=-1)), IA),
    ("delay-400-days", _enqueue(delay=timedelta(days=400)), IA),
    ("timeout-zero", _enqueue(timeout=timedelta(0)), IA),
    ("payload-set", _enqueue(payload={"a": {1}}), IA),
    ("payload-nan", _enqueue(payload={"a": float("inf")}), IA),
    ("payload-nul", _enqueue(payload={"text": "a\x00b"}), IA),
    ("payload-nul-key", _enqueue(payload={"a\x00": 1}), IA),
    ("payload-10000-deep", _enqueue(payload=nested(DEEP)), IA),
    ("payload-100000-deep", _enqueue(payload=nested(100_000)), IA),
    ("payload-600-deep", _enqueue(payload=nested(600)), IA),
    ("payload-300kb", _enqueue(payload={"a": "x" * 300_000}), IA),
    ("payload-lone-surrogate", _enqueue(payload={"a": "\udc80"}), IA),
    ("unique-key-empty", _enqueue(unique_key=""), IA),
    ("unique-key-lone-surrogate", _enqueue(unique_key="\ud800"), IA),
    ("unique-key-int", _enqueue(unique_key=5), IA),
    ("unique-key-reused", _enqueue(payload={"to": "+1"}, queue="sms", unique_key="u-1"), payq.IdempotencyConflict),
    ("idempotency-key-256-bytes", _enqueue(idempotency_key="k" * 256), IA),
    ("option-unknown", _enqueue(bogus=1), IA),
    ("task-amount-int", _enqueue(amount=5), IA),
    ("task-amount-without-positive", _enqueue(amount=Money(0, "CNY")), AMT),
    ("settle-str", _enqueue(settle="capture"), IA),
    ("settle-unknown-hold", lambda w: w.db.enqueue("payout", {}, settle=Settle.capture(999_999, into=w.bob)), IA),
    ("settle-followup-reserved", lambda w: w.db.enqueue("payout", {}, settle=Settle.followup_only("payq.alert")),
     IA),
    ("enqueue-many-dict", lambda w: w.db.enqueue_many([{"kind": "sms.send"}]), IA),
    ("enqueue-many-one-bad", lambda w: w.db.enqueue_many([TaskRequest("sms.send"), TaskRequest("")]), IA),
    # tasks and queues
    ("task-get-2**63", lambda w: w.db.tasks.get(BIG), IA),
    ("task-get-none", lambda w: w.db.tasks.get(None), IA),
    ("task-get-unknown", lambda w: w.db.tasks.get(999_999), payq.UnknownTask),
    ("tasks-list-state-unknown", lambda w: w.db.tasks.list(state="bogus"), IA),
    ("tasks-list-after-id-2**63", lambda w: w.db.tasks.list(after_id=BIG), IA),
    ("tasks-list-limit-zero", lambda w: w.db.tasks.list(limit=0), IA),
    ("task-retry-2**63", lambda w: w.db.tasks.retry(BIG, actor="ops"), IA),
    ("task-retry-unknown", lambda w: w.db.tasks.retry(999_999, actor="ops"), payq.UnknownTask),
    ("task-retry-pending", lambda w: w.db.tasks.retry(w.pending, actor="ops"), payq.InvalidState),
    ("task-cancel-actor-empty", lambda w: w.db.tasks.cancel(w.pending, actor=""), IA),
    ("task-cancel-actor-none", lambda w: w.db.tasks.cancel(w.pending, actor=None), IA),
    ("task-resolve-pending", lambda w: w.db.tasks.resolve(w.pending, applied=True, actor="ops"),
     payq.InvalidState),
    ("task-resolve-applied-str", lambda w: w.db.tasks.resolve(w.pending, applied="yes", actor="ops"), IA),
    ("queue-configure-injection", lambda w: w.db.queues.configure("x'); drop table task; --"), IA),
    ("queue-configure-name-none", lambda w: w.db.queues.configure(None), IA),
    ("queue-configure-concurrency-zero", lambda w: w.db.queues.configure("sms", concurrency=0), IA),
    ("queue-configure-rate-str", lambda w: w.db.queues.configure("sms", rate="10/s"), IA),
    ("queue-configure-weight-2**40", lambda w: w.db.queues.configure("sms", weight=2**40), IA),
    ("queue-configure-amount-int", lambda w: w.db.queues.configure("sms", amount=(5, timedelta(hours=1))), IA),
    ("queue-pause-injection", lambda w: w.db.queues.pause("x'); drop"), IA),
    ("queue-pause-for-int", lambda w: w.db.queues.pause_for("sms", 5), IA),
    ("cron-schedule-bad", lambda w: w.db.queues.cron("nightly", "every night", "report"), IA),
    ("cron-time-zone-unknown", lambda w: w.db.queues.cron("nightly", "0 3 * * *", "report", time_zone="Mars/Base"),
     IA),
    ("cron-kind-reserved", lambda w: w.db.queues.cron("nightly", "0 3 * * *", "payq.alert"), IA),
    ("cron-payload-nul", lambda w: w.db.queues.cron("nightly", "0 3 * * *", "report", {"a": "\x00"}), IA),
    ("sql-params-int", lambda w: _execute(w, "SELECT $1::int", 5), IA),
    ("sql-param-float", lambda w: _execute(w, "SELECT $1::int", [1.5]), IA),
]


def _execute(w: SimpleNamespace, sql: str, params: Any) -> Any:
    with w.db.transaction() as t:
        return t.execute(sql, params)


@pytest.mark.parametrize("case, action, expected", API_CASES, ids=names(API_CASES))
def test_python_api_refuses(world: SimpleNamespace, case: str, action: L, expected: type) -> None:
    error = refused(world, expected, lambda: action(world))
    assert isinstance(error, payq.Error)


# ---------------------------------------------------------------- connect: DSNs and schema names

CONNECT_CASES: List[Tuple[str, Callable[[str], Any], type]] = [
    ("dsn-nul-truncation", lambda dsn: payq.connect(dsn + "\x00 dbname=other", schema="payq_x"), payq.ConfigError),
    ("dsn-control-character", lambda dsn: payq.connect(dsn + "\x01", schema="payq_x"), payq.ConfigError),
    ("dsn-empty", lambda dsn: payq.connect("", schema="payq_x"), payq.ConfigError),
    ("dsn-int", lambda dsn: payq.connect(5432, schema="payq_x"), payq.ConfigError),
    ("dsn-no-equals", lambda dsn: payq.connect(f"nonsense password={PASSWORD}"), payq.ConfigError),
    ("dsn-bad-uri", lambda dsn: payq.connect(f"postgresql://u:{PASSWORD}@/db?bogus=1"), payq.ConfigError),
    # libpq's own message repeats this URI, password and all: payq masks it.
    ("dsn-uri-unclosed-ipv6", lambda dsn: payq.connect(f"postgresql://u:{PASSWORD}@[::1/db"), payq.ConfigError),
    # Nothing sent, nothing applied: the DatabaseError that may be retried.
    ("dsn-unreachable", lambda dsn: payq.connect(f"host=/nonexistent dbname=x password={PASSWORD}"),
     payq.ConnectionLost),
    ("schema-public", lambda dsn: payq.connect(dsn, schema="public"), payq.ConfigError),
    ("schema-upper-case", lambda dsn: payq.connect(dsn, schema="Payq"), payq.ConfigError),
    ("schema-pg-prefix", lambda dsn: payq.connect(dsn, schema="pg_payq"), payq.ConfigError),
    ("schema-information-schema", lambda dsn: payq.connect(dsn, schema="information_schema"), payq.ConfigError),
    ("schema-injection", lambda dsn: payq.connect(dsn, schema='x"; drop schema payq; --'), payq.ConfigError),
    ("schema-64-chars", lambda dsn: payq.connect(dsn, schema="s" * 64), payq.ConfigError),
    ("schema-none", lambda dsn: payq.connect(dsn, schema=None), payq.ConfigError),
    ("prepare-statements-str", lambda dsn: payq.connect(dsn, schema="payq_x", prepare_statements="no"),
     payq.ConfigError),
]


@pytest.mark.parametrize("case, action, expected", CONNECT_CASES, ids=names(CONNECT_CASES))
def test_connect_refuses(world: SimpleNamespace, case: str, action: Callable[[str], Any], expected: type) -> None:
    error = refused(world, expected, lambda: action(world.dsn))
    assert PASSWORD not in str(error)


def test_public_schema_needs_the_explicit_flag(payq_dsn: str) -> None:
    db = payq.connect(payq_dsn, schema="public", shared_schema=True)
    assert db.schema == "public" and db.schema_version() == 0  # connected; nothing migrated there


def test_a_nul_in_a_dsn_never_connects_elsewhere(world: SimpleNamespace) -> None:
    """libpq reads a C string: ``dbname=payq\\x00 dbname=other`` used to
    connect to ``payq``, silently."""
    with pytest.raises(payq.ConfigError, match="control character at position"):
        payq.connect(world.dsn + "\x00 dbname=other", schema=world.schema)


def test_passwords_are_masked_in_dsns() -> None:
    from payq.database import dsn_masked

    assert dsn_masked("host=h password=s3cr3t dbname=d") == "host=h password=**** dbname=d"
    assert dsn_masked("host=h password = 'a b\\' c' dbname=d") == "host=h password = **** dbname=d"
    assert dsn_masked("postgresql://u:s3cr3t@h:5/d?sslmode=require") == "postgresql://u:****@h:5/d?sslmode=require"
    assert dsn_masked("postgres://h/d?user=u&password=s3cr3t&x=1") == "postgres://h/d?user=u&password=****&x=1"
    assert dsn_masked("host=h dbname=d") == "host=h dbname=d"


# ---------------------------------------------------------------- the application's connection

APP_CASES: List[Tuple[str, Callable[[Any, SimpleNamespace], Any], type]] = [
    ("app-payload-nul", lambda c, w: payq.outbox.enqueue(c, "sms.send", {"t": "\x00"}, schema=w.schema), IA),
    ("app-payload-deep", lambda c, w: payq.outbox.enqueue(c, "sms.send", nested(DEEP), schema=w.schema), IA),
    ("app-kind-reserved", lambda c, w: payq.outbox.enqueue(c, "payq.alert", {}, schema=w.schema), IA),
    ("app-queue-none", lambda c, w: payq.outbox.enqueue(c, "sms.send", {}, queue=None, schema=w.schema), IA),
    ("app-metadata-nul", lambda c, w: payq.ledger.transfer(c, w.alice, w.bob, 1, key="a-new",
                                                           metadata={"n": "\x00"}, schema=w.schema), IA),
    ("app-kind-10kb", lambda c, w: payq.ledger.transfer(c, w.alice, w.bob, 1, key="a-new", kind="k" * 10_000,
                                                        schema=w.schema), IA),
    ("app-owner-none", lambda c, w: payq.ledger.account(c, None, "CNY", schema=w.schema), IA),
    ("app-post-same-account", lambda c, w: payq.ledger.post(c, [(w.alice, -1), (w.alice, 1)], key="a-new",
                                                            schema=w.schema), IA),
    ("app-insufficient-funds", lambda c, w: payq.ledger.transfer(c, w.alice, w.bob, 10**10, key="a-new",
                                                                 schema=w.schema), payq.InsufficientFunds),
    ("app-unknown-account", lambda c, w: payq.ledger.transfer(c, w.alice, 999_999, 1, key="a-new",
                                                              schema=w.schema), payq.UnknownAccount),
    ("app-hold-zero", lambda c, w: payq.ledger.hold(c, w.alice, 0, key="a-new", schema=w.schema), AMT),
]


@pytest.fixture(scope="module")
def app_connection(world: SimpleNamespace) -> Iterator[Any]:
    with psycopg.connect(world.dsn) as connection:
        yield connection


@pytest.mark.parametrize("case, action, expected", APP_CASES, ids=names(APP_CASES))
def test_application_connection_refuses_and_stays_usable(world: SimpleNamespace, app_connection: Any, case: str,
                                                         action: Callable[[Any, SimpleNamespace], Any],
                                                         expected: type) -> None:
    """Refused before the database: the caller's transaction is not
    aborted (no InFailedSqlTransaction), and committing it writes nothing."""
    with writes_nothing(world.db):
        with pytest.raises(BaseException) as caught:
            action(app_connection, world)
        assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
        assert app_connection.execute("SELECT 41 + 1").fetchone() == (42,)
        app_connection.commit()


# ---------------------------------------------------------------- the CLI

CLI_CASES: List[Tuple[str, List[str], int]] = [
    # ids beyond int64 (issue 20 item 8)
    ("history-id-2**63", ["ledger", "history", "{big}"], 2),
    ("history-id-text", ["ledger", "history", "abc"], 64),
    ("history-id-negative", ["ledger", "history", "--", "-1"], 2),
    ("history-limit-100000", ["ledger", "history", "{alice}", "--limit", "100000"], 2),
    ("history-after-seq-2**63", ["ledger", "history", "{alice}", "--after-seq", "{big}"], 2),
    ("accounts-after-id-2**63", ["ledger", "accounts", "--after-id", "{big}"], 2),
    ("show-id-2**63", ["tasks", "show", "{big}"], 2),
    ("show-id-unknown", ["tasks", "show", "999999"], 2),
    ("show-id-text", ["tasks", "show", "x"], 64),
    ("list-after-id-2**63", ["tasks", "list", "--after-id", "{big}"], 2),
    ("list-limit-2**63", ["tasks", "list", "--limit", "{big}"], 2),
    ("list-state-unknown", ["tasks", "list", "--state", "bogus"], 64),
    ("list-older-than-soon", ["tasks", "list", "--older-than", "soon"], 64),
    ("retry-id-2**63", ["tasks", "retry", "{big}", "--actor", "ops"], 2),
    ("retry-pending", ["tasks", "retry", "{pending}", "--actor", "ops"], 2),
    ("retry-actor-empty", ["tasks", "retry", "{pending}", "--actor", ""], 2),
    ("cancel-without-actor", ["tasks", "cancel", "{pending}"], 64),
    ("resolve-pending", ["tasks", "resolve", "{pending}", "--actor", "ops", "--applied"], 2),
    ("resolve-capture-into-2**63", ["tasks", "resolve", "{pending}", "--actor", "ops", "--applied",
                                    "--capture-into", "{big}"], 2),
    # enqueue
    ("enqueue-max-attempts-huge", ["enqueue", "k", "--max-attempts", "99999999999"], 2),
    ("enqueue-max-attempts-zero", ["enqueue", "k", "--max-attempts", "0"], 2),
    ("enqueue-max-attempts-text", ["enqueue", "k", "--max-attempts", "many"], 64),
    ("enqueue-payload-deep", ["enqueue", "k", "--payload", "{deep}"], 2),
    ("enqueue-payload-not-json", ["enqueue", "k", "--payload", "{nope"], 2),
    ("enqueue-payload-nul", ["enqueue", "k", "--payload", '{"t": "\\u0000"}'], 2),
    ("enqueue-kind-reserved", ["enqueue", "payq.alert"], 2),
    ("enqueue-kind-empty", ["enqueue", ""], 2),
    ("enqueue-queue-bad", ["enqueue", "k", "--queue", "bad queue!"], 2),
    ("enqueue-queue-reserved", ["enqueue", "k", "--queue", "payq.alerts"], 2),
    ("enqueue-unique-key-reused", ["enqueue", "sms.send", "--queue", "sms", "--unique-key", "u-1"], 2),
    # worker (issue 20 item 8)
    ("worker-app-missing-module", ["worker", "--app", "nonexistent.module"], 64),  # issue 21: a usage error
    ("worker-without-app", ["worker"], 64),
    ("worker-queue-weight-text", ["worker", "--app", "json", "--queues", "q:heavy"], 64),
    # queues
    ("queues-set-injection", ["queues", "set", "x'); drop table task; --"], 2),
    ("queues-set-rate-words", ["queues", "set", "q", "--rate", "ten per second"], 64),
    ("queues-set-concurrency-zero", ["queues", "set", "q", "--concurrency", "0"], 2),
    ("queues-set-weight-2**40", ["queues", "set", "q", "--weight", "1099511627776"], 2),
    ("queues-set-amount-unknown-currency", ["queues", "set", "q", "--amount", "5.00XQQ/1h"], 64),
    ("queues-pause-bad-name", ["queues", "pause", "bad name!"], 2),
    # demo (issue 20 item 9: its argument check)
    ("demo-wallets-zero", ["demo", "--wallets", "0"], 64),
    ("demo-threads-1000", ["demo", "--threads", "1000"], 64),
    # DSNs and schemas (issue 20 item 10; reserved names)
    ("schema-public", ["--schema", "public", "ledger", "accounts"], 2),
    ("schema-upper-case", ["--schema", "Bad", "ledger", "accounts"], 2),
    ("dsn-control-character", ["--dsn", "dbname=x\x01", "ledger", "accounts"], 2),
    ("dsn-no-equals", ["--dsn", "nonsense", "ledger", "accounts"], 2),
    ("dsn-unreachable", ["--dsn", "host=/nonexistent dbname=x", "ledger", "accounts"], 69),
    ("command-unknown", ["no-such-command"], 64),
    ("ledger-without-subcommand", ["ledger"], 64),
]


def _argv(world: SimpleNamespace, argv: List[str]) -> List[str]:
    fill = {"{big}": str(BIG), "{pending}": str(world.pending), "{alice}": str(world.alice.id),
            "{deep}": "[" * DEEP + "]" * DEEP}
    args = [fill.get(a, a) for a in argv]
    head = [] if "--dsn" in args else ["--dsn", world.dsn]
    head += [] if "--schema" in args else ["--schema", world.schema]
    return head + args


@pytest.mark.parametrize("case, argv, status", CLI_CASES, ids=names(CLI_CASES))
def test_cli_refuses_with_its_exit_status(world: SimpleNamespace, capsys: Any, case: str, argv: List[str],
                                          status: int) -> None:
    with writes_nothing(world.db):
        try:
            got = cli_main(_argv(world, argv))
        except SystemExit as exit_:  # argparse's usage errors
            got = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert got == status, err
    assert "Traceback" not in err
    if status in (2, 69):
        [line] = err.splitlines()  # one line, no traceback
        assert line.startswith("payq: ")
    else:
        assert err.splitlines()[-1].startswith("payq") and "error:" in err.splitlines()[-1]


@pytest.mark.parametrize("argv, status", [(["tasks", "show", "{big}"], 2),
                                          (["worker", "--app", "nonexistent.module"], 64),
                                          (["enqueue", "k", "--payload", "{deep}"], 2)],
                         ids=["show", "worker", "payload"])
def test_cli_process_prints_one_line_and_no_traceback(world: SimpleNamespace, argv: List[str], status: int) -> None:
    with writes_nothing(world.db):
        result = subprocess.run([sys.executable, "-m", "payq", *_argv(world, argv)], capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == status, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("payq: "), result.stderr


def test_demo_never_prints_the_password(payq_dsn: str) -> None:
    dsn = f"{payq_dsn} password={PASSWORD}"  # the throwaway cluster trusts local users: it is ignored
    bad = subprocess.run([sys.executable, "-m", "payq", "--dsn", dsn, "demo", "--wallets", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 64 and PASSWORD not in bad.stdout + bad.stderr
    with fresh_schema(payq_dsn, prefix="demo", migrate=False) as db:
        ran = subprocess.run([sys.executable, "-m", "payq", "--dsn", dsn, "--schema", db.schema, "demo",
                              "--wallets", "1", "--withdrawals", "0", "--threads", "1"],
                             capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "password=****" in ran.stdout and PASSWORD not in ran.stdout + ran.stderr


# ---------------------------------------------------------------- the HTTP inbox


def _signed(body: bytes) -> Dict[str, str]:
    return {"X-Signature": FakeProvider.signature(body, SECRET)}


def _callback(**fields: Any) -> bytes:
    message = {"event_id": "e-1", "key": "wd-1", "status": "SUCCESS"}
    message.update(fields)
    return json.dumps(message).encode()


INBOX_CASES: List[Tuple[str, bytes, Callable[[bytes], Dict[str, str]], int]] = [
    ("forged-signature", _callback(), lambda b: {"X-Signature": "00" * 32}, 401),
    ("no-signature", _callback(), lambda b: {}, 401),
    ("signature-of-another-body", _callback(), lambda b: _signed(b + b" "), 401),
    ("signature-non-ascii", _callback(), lambda b: {"X-Signature": "é" * 64}, 400),
    ("body-not-json", b"{nope", _signed, 400),
    ("body-json-array", b"[1, 2]", _signed, 400),
    ("body-without-key", json.dumps({"event_id": "e-1", "status": "SUCCESS"}).encode(), _signed, 400),
    ("body-without-status", json.dumps({"event_id": "e-1", "key": "wd-1"}).encode(), _signed, 400),
    ("body-30000-deep", b'{"event_id":"e","key":"k","status":"SUCCESS","x":' + b"[" * 30_000 + b"]" * 30_000
     + b"}", _signed, 400),
    ("body-nul-in-key", _callback(key="wd\x00"), _signed, 400),
    ("body-nul-in-payload", _callback(note="a\x00b"), _signed, 400),
    ("body-70kb", _callback(note="x" * 70_000), _signed, 413),
    ("key-300-chars", _callback(key="k" * 300), _signed, 400),
    ("event-id-empty", _callback(event_id=""), _signed, 400),
    ("event-id-newline", _callback(event_id="e\n1"), _signed, 400),
    ("key-lone-surrogate", b'{"event_id":"e-1","key":"\\ud800","status":"SUCCESS"}', _signed, 400),
    ("body-nan", b'{"event_id":"e-1","key":"wd-1","status":"SUCCESS","x":NaN}', _signed, 400),
]


@pytest.fixture(scope="module")
def receiver(world: SimpleNamespace) -> CallbackReceiver:
    return CallbackReceiver(world.db, provider="fake", secret=SECRET)


@pytest.mark.parametrize("case, body, headers, status", INBOX_CASES, ids=names(INBOX_CASES))
def test_inbox_answers_bad_callbacks(world: SimpleNamespace, receiver: CallbackReceiver, case: str, body: bytes,
                                     headers: Callable[[bytes], Dict[str, str]], status: int) -> None:
    with writes_nothing(world.db):
        answer = receiver.handle(body, headers(body))
    assert answer[0] == status, answer


RAW_CASES: List[Tuple[str, bytes, int]] = [
    ("content-length-negative", b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + b"x" * 4096,
     400),
    ("content-length-text", b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", 400),
    ("content-length-huge", b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{}", 413),
    ("content-length-twice", b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3"
     b"\r\n\r\n{}", 400),
]


@pytest.fixture(scope="module")
def endpoint(receiver: CallbackReceiver) -> Iterator[Any]:
    with receiver.serve() as server:
        yield server


@pytest.mark.parametrize("case, request_bytes, status", RAW_CASES, ids=names(RAW_CASES))
def test_inbox_server_refuses_bad_requests_before_reading(world: SimpleNamespace, endpoint: Any, case: str,
                                                          request_bytes: bytes, status: int) -> None:
    address = urlsplit(endpoint.url)
    with writes_nothing(world.db):
        with socket.create_connection((address.hostname, address.port), timeout=10) as client:
            client.sendall(request_bytes)
            head = client.recv(4096).decode("latin-1")
    assert head.startswith(f"HTTP/1.0 {status}") or head.startswith(f"HTTP/1.1 {status}"), head[:200]


# ---------------------------------------------------------------- the dashboard


class Browser:
    """Calls the dashboard's WSGI application, keeping cookies."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies: Dict[str, str] = {}

    def request(self, method: str, path: str, form: Optional[Dict[str, str]] = None, origin: Optional[str] = ORIGIN,
                content_type: str = "application/x-www-form-urlencoded") -> Tuple[int, str]:
        target = urlsplit(path)
        body = urlencode(form or {}).encode()
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": target.path, "QUERY_STRING": target.query,
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1",
        }
        if method == "POST":
            environ["CONTENT_TYPE"] = content_type
            if origin is not None:
                environ["HTTP_ORIGIN"] = origin
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        captured: Dict[str, Any] = {}

        def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        text = b"".join(self.app(environ, start_response)).decode("utf-8", "replace")
        for name, value in captured["headers"]:
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return int(captured["status"].split()[0]), text

    def csrf(self, path: str) -> str:
        status, text = self.request("GET", path)
        match = re.search(r'name="csrf" value="([^"]+)"', text)
        assert status == 200 and match, text[:500]
        return match.group(1)

    def login(self, operator: str = "lin", token: str = TOKEN) -> int:
        csrf = self.csrf("/login")
        return self.request("POST", "/login", {"csrf": csrf, "operator": operator, "token": token, "next": "/"})[0]


@pytest.fixture(scope="module")
def dashboard(world: SimpleNamespace) -> Iterator[Any]:
    with make_app(world.db, token=TOKEN) as app:
        yield app


def _act(action: str, note: str = "because", csrf: Optional[str] = None, origin: Optional[str] = ORIGIN,
         **fields: str) -> Callable[[Browser, SimpleNamespace], int]:
    def run(browser: Browser, w: SimpleNamespace) -> int:
        token = browser.csrf(f"/tasks/{w.pending}") if csrf is None else csrf
        form = {"csrf": token, "note": note, **fields}
        return browser.request("POST", f"/tasks/{w.pending}/{action}", form, origin=origin)[0]
    return run


def _get(path: str) -> Callable[[Browser, SimpleNamespace], int]:
    return lambda browser, w: browser.request("GET", path.format(pending=w.pending, big=BIG))[0]


DASHBOARD_CASES: List[Tuple[str, bool, Callable[[Browser, SimpleNamespace], int], int]] = [
    # (case, logged in first, request, HTTP status)
    ("login-wrong-token", False, lambda b, w: b.login(token=TOKEN + "x"), 401),
    ("login-hostile-operator", False, lambda b, w: b.login(operator="lin <script>"), 400),
    ("login-without-csrf", False, lambda b, w: b.request("POST", "/login", {"operator": "lin", "token": TOKEN})[0],
     403),
    ("login-foreign-origin", False, lambda b, w: b.request("POST", "/login", {"csrf": b.csrf("/login"),
                                                                              "operator": "lin", "token": TOKEN},
                                                           origin="https://evil.example")[0], 403),
    ("action-without-login", False, lambda b, w: b.request("POST", f"/tasks/{w.pending}/cancel",
                                                           {"note": "x"})[0], 401),
    ("action-forged-csrf", True, _act("cancel", csrf="forged"), 403),
    ("action-foreign-origin", True, _act("cancel", origin="https://evil.example"), 403),
    ("action-without-note", True, _act("cancel", note=""), 400),
    ("action-note-too-long", True, _act("cancel", note="n" * 2001), 400),
    ("action-retry-pending", True, _act("retry"), 409),
    ("action-resolve-without-outcome", True, _act("resolve"), 400),
    ("action-resolve-pending", True, _act("resolve", outcome="applied"), 409),
    ("action-unknown", True, lambda b, w: b.request("POST", f"/tasks/{w.pending}/explode",
                                                    {"csrf": b.csrf("/"), "note": "x"})[0], 404),
    ("action-text-plain", True, lambda b, w: b.request("POST", f"/tasks/{w.pending}/cancel", {"note": "x"},
                                                       content_type="text/plain")[0], 415),
    ("action-form-too-large", True, _act("cancel", padding="p" * 70_000), 413),
    ("action-unknown-task", True, lambda b, w: b.request("POST", "/tasks/999999/cancel",
                                                         {"csrf": b.csrf("/"), "note": "x"})[0], 404),
    ("page-unknown-task", True, _get("/tasks/999999"), 404),
    ("page-task-id-text", True, _get("/tasks/abc"), 404),
    ("page-task-id-2**63", True, _get("/tasks/{big}"), 404),
    ("page-tasks-state-unknown", True, _get("/tasks?state=bogus"), 400),
    ("page-tasks-page-text", True, _get("/tasks?page=abc"), 400),
    ("page-tasks-sort-unknown", True, _get("/tasks?sort=id;drop"), 400),
    ("page-tasks-payload-not-a-search", True, _get("/tasks?payload=%5B1%5D"), 400),
    ("page-tasks-limit-huge", True, _get("/tasks?limit=100000"), 400),
    ("page-accounts-after-id-negative", True, _get("/accounts?after_id=-1"), 400),
    ("page-unknown-account", True, _get("/accounts/999999"), 404),
    # The ledger has no UnknownTransaction: an unknown transaction id is an
    # InvalidArgument, which the dashboard answers 400 (tasks and accounts: 404).
    ("page-unknown-transaction", True, _get("/transactions/999999"), 400),
    ("static-traversal", True, _get("/static/../app.py"), 404),
    ("method-delete", True, lambda b, w: b.request("DELETE", "/")[0], 405),
    ("logout-by-get", True, _get("/logout"), 405),
]


@pytest.mark.parametrize("case, logged_in, request_, status", DASHBOARD_CASES, ids=names(DASHBOARD_CASES))
def test_dashboard_refuses(world: SimpleNamespace, dashboard: Any, case: str, logged_in: bool,
                           request_: Callable[[Browser, SimpleNamespace], int], status: int) -> None:
    browser = Browser(dashboard)
    if logged_in:
        assert browser.login() == 303
    with writes_nothing(world.db):
        assert request_(browser, world) == status


# ---------------------------------------------------------------- the campaign's size


def test_the_campaign_has_at_least_150_distinct_bad_inputs() -> None:
    doors = [API_CASES, CONNECT_CASES, APP_CASES, CLI_CASES, INBOX_CASES, RAW_CASES, DASHBOARD_CASES]
    distinct = {(door, name) for door, cases in enumerate(doors) for name in names(cases)}
    assert len(distinct) == sum(len(cases) for cases in doors)  # no case twice in a table
    assert len(distinct) >= 150, len(distinct)
