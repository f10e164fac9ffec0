"""Story 3: a multi-step payment with recovery points.

A customer withdraws money from a wallet to a bank account through a payout
provider. The flow has four steps, and each commits its progress before the
next one starts, so the process can die anywhere and a new run picks up
where the old one stopped:

1. **reserve**: hold the amount on the wallet and enqueue the ``charge``
   task, in one transaction (the hold's key and the task's unique key make
   a second run of this step a no-op);
2. **charge**: a worker calls the provider with the order's idempotency
   key; the provider applies a key at most once and answers a retry with
   the stored result;
3. **capture**: the handler records the success, captures the hold (the
   task's settlement) and enqueues the ``notify`` task, in one transaction.
   On a definite refusal it enqueues the failure notice, then reports
   ``payq.Fail``, which releases the hold (the task's settlement);
4. **notify**: the customer notice is written and the task completed in one
   transaction.

Two orders run: one is paid, one is refused by the provider (a closed
account). At the end every invariant is checked: each hold captured or
released once, one notice per order, the provider's record matching the
ledger, and a clean ledger audit.

Crash it on purpose: ``PAYQ_EXAMPLE_CRASH_AT=<point>`` makes the process
SIGKILL itself at that point (one of ``reserved``, ``charge_before_call``,
``charge_after_call``, ``captured``, ``notify_before_commit``, ``notified``).
Run again with the same ``--run-id`` to resume. A crash inside a handler
leaves its task running under a lease; the next run's worker rescues it when
the lease ends (a few seconds) and retries it with the same idempotency key.

Run::

    python examples/multi_step_payment.py       # embedded server, in-process fake provider
    python examples/multi_step_payment.py --dsn "host=..." --schema app \\
        --run-id r1 --provider-url http://127.0.0.1:8080

Without ``--provider-url`` a :class:`payq.testing.FakeProvider` runs in
this process (with a timeout and a 500 injected, to show the retries); it
dies with the process, so crash-and-resume runs need a provider that
outlives them (``--provider-url``), as the tests use. The DSN defaults to
``PAYQ_DSN``, else payq's embedded server. Exit status: 0 when every
invariant holds, 1 when one is broken.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import sys
import time
import urllib.parse
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence

import payq
from payq import Account, Hold, Money, Settle
from payq.testing import FakeProvider
from payq.worker import Registry, Worker
from example_support import Invariants, connect, example_parser

CURRENCY = "CNY"
CRASH_POINTS = ("reserved", "charge_before_call", "charge_after_call", "captured", "notify_before_commit",
                "notified")
CRASH_AT = os.environ.get("PAYQ_EXAMPLE_CRASH_AT") or None
# One attempt's lease. A worker killed mid-call holds the task this long;
# then the next run's maintenance rescues it (recorded as ``unknown``).
CHARGE_LEASE = timedelta(seconds=2)
NOTIFY_LEASE = timedelta(seconds=2)
# Shorter than the lease, so a call without an answer ends as ``unknown``
# while this attempt still owns the task.
PROVIDER_TIMEOUT_S = 0.5
CHARGE_ATTEMPT_COUNT_MAX = 8
FLOW_WAIT_S_MAX = 60.0
# Refusals the provider records as final for the key: retrying cannot help.
DEFINITE_REFUSALS = {"ACCOUNT_INVALID", "NOTENOUGH"}
NOTICE_TABLE = "@schema@.example_payment_notice"


def crash_point(name: str) -> None:
    """Die here, as a power cut would, if asked to."""
    assert name in CRASH_POINTS, name
    if name == CRASH_AT:
        print(f"!! PAYQ_EXAMPLE_CRASH_AT={name}: killing the process (SIGKILL)", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Order:
    number: str
    bank_account: str
    amount: str


ORDERS = (Order("W-1", "bank:ada-001", "120.00"), Order("W-2", "bad:closed-123", "80.00"))


# ---------------------------------------------------------------- the provider, over HTTP


@dataclass(frozen=True)
class ProviderReply:
    status: int
    body: Dict[str, Any]
    retry_after_s: Optional[float]


class ProviderClient:
    """The payout provider's API (the contract of docs/fake-provider.md).

    Transport failures are classified where they happen: nothing sent is a
    ``payq.Retry``; sent without an answer is a ``payq.Unknown``, because
    the money may have moved."""

    def __init__(self, base_url: str, timeout_s: float = PROVIDER_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the provider URL is http://host:port, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str]) -> ProviderReply:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise payq.Retry(f"provider unreachable, nothing sent: {exc}") from exc
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise payq.Unknown(f"sent, but no answer: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = {}
        retry_after = response.getheader("Retry-After")
        return ProviderReply(response.status, parsed if isinstance(parsed, dict) else {},
                             float(retry_after) if retry_after and retry_after.isdigit() else None)

    def pay(self, key: str, account: str, amount_minor: int) -> ProviderReply:
        body = json.dumps({"account": account, "amount_minor": amount_minor, "currency": CURRENCY}).encode()
        return self._request("POST", "/payouts", body, {"Content-Type": "application/json", "Idempotency-Key": key})

    def lookup(self, key: str) -> ProviderReply:
        return self._request("GET", "/payouts/" + urllib.parse.quote(key, safe=""), None, {})


# ---------------------------------------------------------------- the flow


@dataclass(frozen=True)
class Flow:
    """One run's accounts, queue and keys."""

    run_id: str
    world: Account
    clearing: Account
    wallet: Account
    queue: str

    def key(self, order: Order) -> str:
        """The order's idempotency key: what the provider sees on every attempt."""
        return f"wd/{self.run_id}/{order.number}"


def open_flow(db: payq.Database, run_id: str) -> Flow:
    ledger = db.ledger
    namespace = f"withdraw-{run_id}"
    flow = Flow(
        run_id=run_id,
        world=ledger.account("world", CURRENCY, namespace, allow_negative=True),
        clearing=ledger.account("provider-clearing", CURRENCY, namespace, allow_negative=True),
        wallet=ledger.account("customer:ada", CURRENCY, namespace),
        queue=f"example.withdrawals.{run_id}",
    )
    ledger.transfer(flow.world, flow.wallet, "500.00", key=f"wd/{run_id}/fund", kind="top_up")
    with db.transaction() as t:
        t.execute(f"""CREATE TABLE IF NOT EXISTS {NOTICE_TABLE} (
                        order_key   text PRIMARY KEY,
                        outcome     text NOT NULL,
                        detail      text NOT NULL,
                        notified_at timestamptz NOT NULL DEFAULT now())""")
    return flow


@dataclass(frozen=True)
class Reserved:
    hold: Hold
    task_id: int
    created: bool


def reserve(db: payq.Database, flow: Flow, order: Order) -> Reserved:
    """Step 1, in one transaction: the hold and the charge task. Run again,
    it finds both (same hold key, same unique key) and changes nothing."""
    key = flow.key(order)
    with db.transaction() as t:
        hold = t.ledger.hold(flow.wallet, order.amount, key=f"{key}/hold")
        task = t.enqueue("payment.charge", {"account": order.bank_account, "amount_minor": hold.amount.minor},
                         queue=flow.queue, unique_key=f"{key}/charge", idempotency_key=key,
                         max_attempts=CHARGE_ATTEMPT_COUNT_MAX, timeout=CHARGE_LEASE, amount=hold.amount,
                         settle=Settle.capture(hold, into=flow.clearing))
    return Reserved(hold, task.task_id, task.created)


def handlers(db: payq.Database, flow: Flow, provider: ProviderClient) -> Registry:
    registry = Registry()

    def enqueue_notice(t: payq.Transaction, key: str, outcome: str, **detail: str) -> None:
        # A short lease: a notice whose worker died is rescued within seconds
        # (a settlement's follow-up task would have payq's 60 s default).
        t.enqueue("payment.notify", {"order_key": key, "outcome": outcome, **detail}, queue=flow.queue,
                  unique_key=f"{key}/notify", timeout=NOTIFY_LEASE)

    @registry.handler("payment.charge", base_delay=timedelta(milliseconds=50), max_delay=timedelta(seconds=1))
    def charge(task: payq.TaskRun) -> None:
        """Steps 2 and 3: pay through the provider, then record the outcome."""
        crash_point("charge_before_call")
        key = task.idempotency_key
        try:
            reply = provider.pay(key, task.payload["account"], task.payload["amount_minor"])
        except (payq.Retry, payq.Unknown) as outcome:
            print(f"    charge {key}: {outcome.reason}: retried with the same key", flush=True)
            raise
        status, code = reply.body.get("status"), reply.body.get("return_code")
        if reply.status == 200 and status == "SUCCESS":
            crash_point("charge_after_call")
            # Success, the hold's capture (the settlement) and the next step
            # commit together, only while this attempt still holds the lease.
            with db.transaction() as t:
                enqueue_notice(t, key, "paid", payout_id=reply.body["payout_id"])
                task.complete(t, {"payout_id": reply.body["payout_id"]})
            print(f"    charge {key}: paid ({reply.body['payout_id']}, attempt {task.attempt})", flush=True)
            crash_point("captured")
            return
        if reply.status == 200 and status == "FAILED" and code in DEFINITE_REFUSALS:
            # The notice commits first. Should the process die before the
            # failure is recorded, the retry meets the same recorded refusal
            # and the notice's unique key finds it already queued.
            with db.transaction() as t:
                enqueue_notice(t, key, "failed", reason=code)
            print(f"    charge {key}: refused ({code}): the hold is released", flush=True)
            raise payq.Fail(f"provider refused: {code}")
        if reply.status == 200 and status == "FAILED":
            raise payq.Retry(f"provider error {code}: nothing applied")
        if reply.status == 429:
            wait_s = reply.retry_after_s if reply.retry_after_s is not None else 1.0
            raise payq.Retry("rate limited", after=timedelta(seconds=wait_s))
        print(f"    charge {key}: HTTP {reply.status}, outcome unknown: retried with the same key", flush=True)
        # A 5xx may come from a proxy after the provider applied the payout;
        # a 409 means this key already paid something: never compensate those.
        raise payq.Unknown(f"provider answered HTTP {reply.status} {code or ''}".strip())

    @registry.handler("payment.notify", base_delay=timedelta(milliseconds=50), max_delay=timedelta(seconds=1))
    def notify(task: payq.TaskRun) -> None:
        """Step 4: the notice and the task's completion commit together."""
        notice = task.payload
        with db.transaction() as t:
            t.execute(f"INSERT INTO {NOTICE_TABLE} (order_key, outcome, detail) VALUES ($1, $2, $3)",
                      [notice["order_key"], notice["outcome"], json.dumps(notice, sort_keys=True)])
            crash_point("notify_before_commit")
            task.complete(t, {"notified": notice["outcome"]})
        print(f"    notify {notice['order_key']}: customer told '{notice['outcome']}'", flush=True)

    return registry


def notices(db: payq.Database, flow: Flow) -> Dict[str, List[str]]:
    """Notices written for this run: {order key: [outcome, ...]}."""
    out: Dict[str, List[str]] = {}
    with db.transaction() as t:
        for key, outcome in t.execute(f"SELECT order_key, outcome FROM {NOTICE_TABLE} WHERE order_key LIKE $1",
                                      [f"wd/{flow.run_id}/%"]):
            assert key is not None and outcome is not None
            out.setdefault(key, []).append(outcome)
    return out


def flow_finished(db: payq.Database, flow: Flow) -> bool:
    """Every task of the run has its final state and every order its notice.
    (A notice alone is not enough: a refusal's notice commits before the
    charge task is recorded as failed.)"""
    counts = db.tasks.stats().get(flow.queue, {})
    open_count = sum(counts.get(state, 0) for state in ("held", "pending", "running"))
    return open_count == 0 and len(notices(db, flow)) == len(ORDERS)


def run_worker(db: payq.Database, flow: Flow, provider: ProviderClient) -> bool:
    """Steps 2-4: a worker runs until the flow has finished."""
    worker = Worker(db, queues=[flow.queue], registry=handlers(db, flow, provider), concurrency=2,
                    poll_interval=timedelta(milliseconds=100), maintenance_interval=timedelta(milliseconds=200),
                    log=False)
    worker.start()
    try:
        deadline = time.monotonic() + FLOW_WAIT_S_MAX
        while not flow_finished(db, flow):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    finally:
        worker.stop()


# ---------------------------------------------------------------- checks


def check(db: payq.Database, flow: Flow, reserved: Dict[str, Reserved], provider: ProviderClient,
          fake: Optional[FakeProvider]) -> Invariants:
    inv = Invariants()
    ledger = db.ledger
    paid, refused = ORDERS
    expected = {paid.number: ("succeeded", "captured", "paid", "SUCCESS"),
                refused.number: ("dead", "released", "failed", "FAILED")}
    written = notices(db, flow)
    for order in ORDERS:
        key = flow.key(order)
        state, hold_status, notice, provider_status = expected[order.number]
        task = db.tasks.get(reserved[order.number].task_id)
        inv.check(task.state == state, f"{key}: charge task {task.state} (expected {state})")
        hold = ledger.get_hold(reserved[order.number].hold.id)
        inv.check(hold.status == hold_status, f"{key}: hold {hold.status} (expected {hold_status})")
        inv.check(written.get(key) == [notice], f"{key}: notices {written.get(key)} (expected exactly ['{notice}'])")
        record = provider.lookup(key)
        inv.check(record.body.get("status") == provider_status,
                  f"{key}: the provider says {record.body.get('status')} (expected {provider_status})")
        if fake is not None:
            applied = fake.applied_count(key)
            inv.check(applied == (1 if state == "succeeded" else 0),
                      f"{key}: the provider moved the money {applied} time(s) in {fake.request_count(key)} request(s)")
    notify_tasks = [t for t in db.tasks.list(queue=flow.queue, limit=1000) if t.kind == "payment.notify"]
    inv.check(sorted(t.state for t in notify_tasks) == ["succeeded"] * len(ORDERS),
              f"one notify task per order, all succeeded ({len(notify_tasks)})")
    paid_money = Money(paid.amount, CURRENCY)
    clearing = ledger.get_account(flow.clearing)
    inv.check(clearing.balance == paid_money, f"the provider's clearing account got {clearing.balance} once")
    wallet = ledger.get_account(flow.wallet)
    inv.check(wallet.balance == Money("500.00", CURRENCY) - paid_money and wallet.held == Money(0, CURRENCY),
              f"the wallet holds {wallet.balance} with {wallet.held} held")
    audit = ledger.audit()
    for violation in audit.violations:
        print(f"    audit: {violation}")
    inv.check(audit.ok, f"ledger audit clean ({audit.accounts_checked} accounts, {audit.entries_checked} entries)")
    return inv


# ---------------------------------------------------------------- the run


def run(db: payq.Database, run_id: str, provider_url: Optional[str]) -> int:
    with ExitStack() as stack:
        fake: Optional[FakeProvider] = None
        if provider_url is None:
            fake = stack.enter_context(FakeProvider(seed=3))
            provider_url = fake.url
        provider = ProviderClient(provider_url)
        print(f"[1/4] opening accounts (run {run_id}; provider {provider_url}) ...")
        flow = open_flow(db, run_id)
        if fake is not None:
            # The first answer for W-1 comes after our timeout (the money
            # moved); W-2's first call meets a 500. Both are retried.
            fake.fault_next("timeout_after_apply", key=flow.key(ORDERS[0]), delay_ms=1500)
            fake.fault_next("error_500", key=flow.key(ORDERS[1]))

        print("[2/4] reserve: a hold and a charge task per order, in one transaction each ...")
        reserved = {}
        for order in ORDERS:
            r = reserve(db, flow, order)
            reserved[order.number] = r
            print(f"    {flow.key(order)}: hold {r.hold.id} ({r.hold.status}), task {r.task_id} "
                  f"({'new' if r.created else 'found: resuming'})")
        crash_point("reserved")

        print("[3/4] a worker charges, captures or releases, and notifies ...")
        if not run_worker(db, flow, provider):
            print(f"FAILED: the flow did not finish within {FLOW_WAIT_S_MAX:.0f} s")
            return 1
        crash_point("notified")

        print("[4/4] checking every invariant ...")
        inv = check(db, flow, reserved, provider, fake)
    return inv.exit_status("every step ran once; no money lost or paid twice")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = example_parser("payq example: a multi-step payment with recovery points",
                            "names this run's accounts and keys; give the same one to resume a crashed run "
                            "(default: random)")
    parser.add_argument("--provider-url", default=None,
                        help="the payout provider (default: a fake one in this process)")
    args = parser.parse_args(argv)
    if CRASH_AT is not None and CRASH_AT not in CRASH_POINTS:
        parser.error(f"PAYQ_EXAMPLE_CRASH_AT is one of {', '.join(CRASH_POINTS)}, not {CRASH_AT!r}")
    run_id = args.run_id or secrets.token_hex(4)
    if CRASH_AT is not None:
        print(f"will crash at {CRASH_AT!r}; resume with --run-id {run_id}")
    return run(connect(args), run_id, args.provider_url)


if __name__ == "__main__":
    sys.exit(main())
