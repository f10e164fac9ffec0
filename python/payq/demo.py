"""``payq demo``: withdrawals to a wallet, end to end, on the embedded default.

Each withdrawal holds the user's balance and enqueues a payout task in one
transaction. A worker pays through a simulated provider that is idempotent
per key and misbehaves on purpose (503s, refusals, timeouts after it already
paid). Success captures the hold, a definite failure releases it, an unknown
outcome is retried with the same key. The report proves that no money was
lost or paid twice. Every run uses its own namespace, queue and keys, so the
demo can be re-run against the same database.
"""

from __future__ import annotations

import random
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, List

import payq
from payq import Money, Settle
from payq.worker import Registry, Worker

__all__ = ["DemoReport", "SimulatedProvider", "run_demo"]


class SimulatedProvider:
    """A payout provider in memory: pays each key at most once, and fails in
    the ways real providers do."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.paid: Dict[str, int] = {}  # key -> amount (minor units)
        self.calls: Counter = Counter()  # key -> requests received
        self.applied: Counter = Counter()  # key -> payments made (1 at most, if keys are reused)

    def pay(self, key: str, amount_minor: int) -> None:
        with self._lock:
            self.calls[key] += 1
            if key in self.paid:
                return  # idempotent: the same key never pays twice
            roll = self._random.random()
            if roll < 0.08:
                raise payq.Retry("provider 503: try again")
            if roll < 0.12:
                raise payq.Fail("provider refused: account closed")
            self.paid[key] = amount_minor
            self.applied[key] += 1
            if roll < 0.17:
                raise payq.Unknown("timeout after the provider applied the payment")


@dataclass
class DemoReport:
    """What the demo did and what the checks found."""

    withdrawals: int = 0
    paid: int = 0
    failed_and_released: int = 0
    needs_review: int = 0
    unfinished: int = 0
    retried_attempts: int = 0
    unknown_attempts: int = 0
    provider_keys_paid_twice: int = 0
    provider_max_calls_per_key: int = 0
    money_in: Money = Money(0, "CNY")
    paid_out: Money = Money(0, "CNY")
    provider_paid: Money = Money(0, "CNY")
    left_in_wallets: Money = Money(0, "CNY")
    held_in_wallets: Money = Money(0, "CNY")
    audit_ok: bool = False
    audit_violations: List[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def conserved(self) -> bool:
        return self.money_in == self.paid_out + self.left_in_wallets

    @property
    def ok(self) -> bool:
        return (self.audit_ok and self.conserved and self.provider_keys_paid_twice == 0
                and self.paid_out == self.provider_paid and self.unfinished == 0)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_demo(
    db: payq.Database,
    *,
    wallet_count: int = 200,
    withdrawal_count: int = 2000,
    thread_count: int = 8,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Run the demo on ``db`` (migrated) and return its report."""
    started = time.monotonic()
    run_id = time.strftime("%Y%m%d%H%M%S") + f"-{random.randrange(10**6):06d}"
    ns = f"demo-{run_id}"
    queue = f"payouts-{run_id}"
    ledger = db.ledger
    report = DemoReport(withdrawals=withdrawal_count)

    say(f"[3/6] opening {wallet_count} wallets in namespace {ns!r} ...")
    world = ledger.account("world", "CNY", ns, allow_negative=True)
    clearing = ledger.account("provider-clearing", "CNY", ns, allow_negative=True)
    wallets = [ledger.account(f"user:{i}", "CNY", ns) for i in range(wallet_count)]
    for wallet in wallets:
        ledger.transfer(world, wallet, "1000.00", key=f"{ns}/fund/{wallet.id}")
    report.money_in = Money(1000_00 * wallet_count, "CNY")

    say(f"[4/6] {withdrawal_count} withdrawals: hold + payout task in one transaction, {thread_count} threads ...")
    tasks: List[int] = []
    tasks_lock = threading.Lock()

    def withdraw(index: int) -> None:
        rng = random.Random(index)
        for n in range(index, withdrawal_count, thread_count):
            wallet = wallets[rng.randrange(wallet_count)]
            amount = Money(rng.randint(100, 5_000), "CNY")
            key = f"{ns}/wd/{n}"
            with db.transaction() as t:
                hold = t.ledger.hold(wallet, amount, key=f"{key}/hold")
                result = t.enqueue("demo.payout", {"amount_minor": amount.minor}, queue=queue, max_attempts=5,
                                   idempotency_key=key, amount=amount,
                                   settle=Settle.capture(hold, into=clearing))
            with tasks_lock:
                tasks.append(result.task_id)

    threads = [threading.Thread(target=withdraw, args=(i,)) for i in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    say(f"[5/6] paying through a simulated provider with faults (C++ worker, {thread_count} threads) ...")
    provider = SimulatedProvider(seed=len(run_id))
    registry = Registry()

    @registry.handler("demo.payout", base_delay=timedelta(milliseconds=5), max_delay=timedelta(milliseconds=50))
    def payout(task: payq.TaskRun) -> dict:
        provider.pay(task.idempotency_key, task.payload["amount_minor"])
        return {"provider": "simulated", "key": task.idempotency_key}

    worker = Worker(db, queues=[queue], registry=registry, concurrency=thread_count, batch=20,
                    poll_interval=timedelta(milliseconds=50), maintenance=False, log=False)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = db.tasks.stats().get(queue, {})
            open_count = counts.get("pending", 0) + counts.get("running", 0)
            done = withdrawal_count - open_count
            sys.stdout.write(f"\r      {done}/{withdrawal_count} settled ({100 * done // max(1, withdrawal_count)}%)")
            sys.stdout.flush()
            if open_count == 0:
                break
            time.sleep(0.25)
        sys.stdout.write("\n")
    finally:
        worker.stop()

    say("[6/6] checking: states, provider, ledger audit ...")
    counts = db.tasks.stats().get(queue, {})
    report.paid = counts.get("succeeded", 0)
    report.failed_and_released = counts.get("dead", 0)
    report.needs_review = counts.get("needs_review", 0)
    report.unfinished = counts.get("pending", 0) + counts.get("running", 0)
    with db.transaction() as t:
        for outcome, count in t.execute(
                "SELECT a.outcome, count(*) FROM @schema@.task_attempt a JOIN @schema@.task k ON k.id = a.task_id "
                "WHERE k.queue = $1 GROUP BY a.outcome", [queue]):
            if outcome == "retry":
                report.retried_attempts = int(count or 0)
            if outcome == "unknown":
                report.unknown_attempts = int(count or 0)
    report.provider_max_calls_per_key = max(provider.calls.values(), default=0)
    report.provider_keys_paid_twice = sum(1 for n in provider.applied.values() if n > 1)
    report.provider_paid = Money(sum(provider.paid.values()), "CNY")
    report.paid_out = ledger.get_account(clearing).balance
    total = held = Money(0, "CNY")
    for wallet in wallets:
        account = ledger.get_account(wallet)
        total = total + account.balance
        held = held + account.held
    report.left_in_wallets = total
    report.held_in_wallets = held
    # needs_review payouts may have been paid: their holds stay until an operator resolves them.
    audit = ledger.audit()
    report.audit_ok = audit.ok
    report.audit_violations = [str(v) for v in audit.violations]
    report.elapsed_s = time.monotonic() - started
    report.peak_rss_mib = _peak_rss_mib()
    return report
