"""``payq demo``: the ledger under load on the embedded default.

Opens wallets, funds them, then runs withdrawals (hold, then capture or
release) and transfers with a fee into a hot fee account from several
threads at once, and ends with the audit. Every run uses a namespace and
keys of its own, so the demo can be re-run against the same database.
"""

from __future__ import annotations

import random
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import payq
from payq import Fee, Money

__all__ = ["DemoReport", "run_demo"]


@dataclass
class DemoReport:
    """What the demo did and what the audit found."""

    wallets: int = 0
    withdrawals_captured: int = 0
    withdrawals_released: int = 0
    transfers: int = 0
    refused_insufficient_funds: int = 0
    unexpected_errors: List[str] = field(default_factory=list)
    money_in: Money = Money(0, "CNY")
    money_out_to_provider: Money = Money(0, "CNY")
    fees_earned: Money = Money(0, "CNY")
    wallets_total: Money = Money(0, "CNY")
    audit_ok: bool = False
    audit_violations: List[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def conserved(self) -> bool:
        return self.money_in == self.money_out_to_provider + self.fees_earned + self.wallets_total


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_demo(
    db: payq.Database,
    *,
    wallet_count: int = 200,
    operation_count: int = 2000,
    thread_count: int = 8,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Run the demo on ``db`` (migrated) and return its report."""
    started = time.monotonic()
    run_id = time.strftime("%Y%m%d%H%M%S") + f"-{random.randrange(10**6):06d}"
    ns = f"demo-{run_id}"
    ledger = db.ledger
    report = DemoReport(wallets=wallet_count)

    say(f"[3/6] opening {wallet_count} wallets in namespace {ns!r} ...")
    world = ledger.account("world", "CNY", ns, allow_negative=True)
    provider = ledger.account("provider-clearing", "CNY", ns, allow_negative=True)
    fees = ledger.account("fee-income", "CNY", ns, deferred_credit=True)
    wallets = [ledger.account(f"user:{i}", "CNY", ns) for i in range(wallet_count)]
    for wallet in wallets:
        ledger.transfer(world, wallet, "500.00", key=f"{ns}/fund/{wallet.id}")
    report.money_in = Money(500_00 * wallet_count, "CNY")

    say(f"[4/6] {operation_count} withdrawals and transfers from {thread_count} threads ...")
    counters: Dict[str, int] = {"captured": 0, "released": 0, "transfers": 0, "refused": 0, "done": 0}
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(index)
        for n in range(index, operation_count, thread_count):
            key = f"{ns}/op/{n}"
            source = wallets[rng.randrange(wallet_count)]
            try:
                if rng.random() < 0.6:
                    # A withdrawal: hold, then the provider either pays (capture) or refuses (release).
                    hold = ledger.hold(source, rng.randint(100, 20_000), key=f"{key}/hold")
                    if rng.random() < 0.85:
                        ledger.capture(hold, target=provider, key=f"{key}/capture")
                        outcome = "captured"
                    else:
                        ledger.release(hold, key=f"{key}/release")
                        outcome = "released"
                else:
                    target = wallets[rng.randrange(wallet_count)]
                    if target.id == source.id:
                        continue
                    ledger.transfer(source, target, rng.randint(100, 20_000), key=key,
                                    fee=Fee(bps=60, fixed=1), fee_account=fees)
                    outcome = "transfers"
            except payq.InsufficientFunds:
                outcome = "refused"
            except payq.Error as exc:
                with lock:
                    report.unexpected_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                counters[outcome] += 1
                counters["done"] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(thread_count)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.5)
        with lock:
            done = counters["done"]
        sys.stdout.write(f"\r      {done}/{operation_count} operations ({100 * done // max(1, operation_count)}%)")
        sys.stdout.flush()
    for thread in threads:
        thread.join()
    sys.stdout.write("\n")

    say("[5/6] folding the hot fee account's pending credits ...")
    while ledger.fold_pending(fees, limit=10_000):
        pass

    say("[6/6] auditing the whole ledger ...")
    audit = ledger.audit()
    report.audit_ok = audit.ok
    report.audit_violations = [str(v) for v in audit.violations]
    report.withdrawals_captured = counters["captured"]
    report.withdrawals_released = counters["released"]
    report.transfers = counters["transfers"]
    report.refused_insufficient_funds = counters["refused"]
    report.money_out_to_provider = ledger.get_account(provider).balance
    report.fees_earned = ledger.get_account(fees).balance
    total = Money(0, "CNY")
    for wallet in wallets:
        total = total + ledger.get_account(wallet).balance
    report.wallets_total = total
    report.elapsed_s = time.monotonic() - started
    report.peak_rss_mib = _peak_rss_mib()
    return report
