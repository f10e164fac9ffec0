"""``payq demo``: withdrawals to a wallet, end to end, on the embedded default.

Each withdrawal holds the user's balance and enqueues a payout task in one
transaction. The C++ worker pays through payq's built-in HTTP handler
(libcurl, no Python in the path) against the fake provider of
``payq.testing``: a real HTTP server on loopback that is idempotent per key
and misbehaves on purpose (500s, 429 with Retry-After, timeouts and dropped
connections after it already paid, refusals for bad accounts). Its result
callbacks arrive duplicated and out of order through the inbox. Success
captures the hold, a definite failure releases it, an unknown outcome is
resolved by a status query before paying again, or by the callback.

The report compares the ledger with the provider key by key: every payout
the provider applied is captured in the ledger, every refused one released,
none paid twice. Every run uses its own namespace, queue and keys, so the
demo can be re-run against the same database. ``payq demo`` runs in a schema
of its own, ``payq_demo`` (``--schema`` names another), so its wallets, dead
tasks, alerts and queues never mix with an application's. Its worker also
serves ``payq.alerts`` with payq's default alert handler (quiet here), so no
alert is left pending.
"""

from __future__ import annotations

import random
import resource
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, TextIO

import payq
from payq import Money, Settle
from payq.inbox import CallbackReceiver
from payq.testing import FakeProvider
from payq.worker import ALERT_KIND, ALERT_QUEUE, Registry, Worker

__all__ = ["DEMO_SCHEMA", "DemoReport", "run_demo"]

DEMO_SCHEMA = "payq_demo"
"""Where ``payq demo`` writes unless ``--schema`` says otherwise."""

# The provider's faults, per payout request (see payq.testing.FakeProvider).
FAULT_RATES = {
    "error_500": 0.04,             # nothing applied: retried
    "timeout_after_apply": 0.03,   # applied, answer too late: unknown, then the status query
    "drop_after_apply": 0.02,      # applied, connection dropped: unknown
    "rate_limited": 0.002,         # 429 + Retry-After: the queue pauses for every worker
    "insufficient_funds": 0.005,   # a definite refusal: the hold is released
}
BAD_ACCOUNT_SHARE = 0.02           # payouts to accounts the provider refuses
# Withdrawals whose hold expires after a second, usually before its payout
# has settled: the payout task owns the hold, so it must stay held (and be
# captured or released once) while maintenance expires holds around it.
EXPIRING_HOLD_SHARE = 0.25
EXPIRING_HOLD_AFTER = timedelta(seconds=1)
HTTP_TIMEOUT_MS = 300              # the handler gives up; the fake answers a timeout fault after 600 ms
# Without a terminal, progress is a line at most this often instead of a
# line rewritten in place (a carriage return garbles logs and pipes).
PROGRESS_LINE_INTERVAL_S = 5.0


@dataclass
class DemoReport:
    """What the demo did and what the checks found."""

    withdrawals: int = 0
    expiring_holds: int = 0
    # Holds of this run's payouts that expired under them (must be none).
    holds_expired_under_payout: int = 0
    paid: int = 0
    failed_and_released: int = 0
    needs_review: int = 0
    unfinished: int = 0
    retried_attempts: int = 0
    unknown_attempts: int = 0
    provider_keys_paid_twice: int = 0
    provider_max_calls_per_key: int = 0
    provider_requests: int = 0
    # Keys whose ledger outcome disagrees with the provider (applied but
    # not captured, or captured but not applied); needs_review excluded.
    ledger_provider_mismatches: int = 0
    callbacks: Dict[str, int] = field(default_factory=dict)
    # payq.alert tasks this run raised (a payout about to die, dead, a
    # contradicting callback), all handled by the demo's worker.
    alerts: int = 0
    alerts_open: int = 0
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
        """True when the money funded equals what was paid out plus what is left in the wallets."""
        return self.money_in == self.paid_out + self.left_in_wallets

    @property
    def ok(self) -> bool:
        """True when every check passed: audit clean, money conserved, no key
        paid twice, ledger and provider agree, no task unfinished or waiting
        for review."""
        return (self.audit_ok and self.conserved and self.provider_keys_paid_twice == 0
                and self.holds_expired_under_payout == 0
                and self.ledger_provider_mismatches == 0 and self.needs_review == 0
                and self.paid_out == self.provider_paid and self.unfinished == 0)

    def as_json(self) -> Dict[str, Any]:
        """The report as JSON-ready values (amounts as text such as ``"12.34 CNY"``)."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Money) else value
        out["conserved"] = self.conserved
        out["ok"] = self.ok
        return out


class _Progress:
    """One progress line: rewritten in place on a terminal, else printed
    at most every PROGRESS_LINE_INTERVAL_S and once at the end."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        isatty = getattr(out, "isatty", None)
        self._terminal = bool(isatty and isatty())
        self._last_line_at: Optional[float] = None
        self._text = ""

    def show(self, text: str) -> None:
        self._text = text
        if self._terminal:
            self._out.write(f"\r{text}")
            self._out.flush()
            return
        now = time.monotonic()
        if self._last_line_at is None or now - self._last_line_at >= PROGRESS_LINE_INTERVAL_S:
            self._last_line_at = now
            self._out.write(text + "\n")
            self._out.flush()

    def end(self) -> None:
        if self._terminal:
            self._out.write("\n")
        elif self._text:
            self._out.write(self._text + "\n")
        self._out.flush()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_demo(
    db: payq.Database,
    *,
    wallet_count: int = 200,
    withdrawal_count: int = 2000,
    thread_count: int = 8,
    say: Callable[[str], None] = print,
    progress: Optional[TextIO] = None,
) -> DemoReport:
    """Run the demo on ``db`` (migrated) and return its report. Steps go
    to ``say``, the running count of settled payouts to ``progress``
    (default stdout; rewritten in place only on a terminal)."""
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
    keys: List[str] = []
    keys_lock = threading.Lock()

    def withdraw(index: int) -> None:
        """Make thread ``index``'s share of the withdrawals (every
        ``thread_count``-th from ``index``), each a hold plus a payout task
        in one transaction."""
        rng = random.Random(index)
        for n in range(index, withdrawal_count, thread_count):
            wallet_index = rng.randrange(wallet_count)
            amount = Money(rng.randint(100, 5_000), "CNY")
            account = ("bad:" if rng.random() < BAD_ACCOUNT_SHARE else "wallet:") + str(wallet_index)
            key = f"{ns}/wd/{n}"
            expires_in = EXPIRING_HOLD_AFTER if rng.random() < EXPIRING_HOLD_SHARE else None
            with db.transaction() as t:
                hold = t.ledger.hold(wallets[wallet_index], amount, key=f"{key}/hold", expires_in=expires_in)
                t.enqueue("demo.payout", {"account": account, "amount_minor": amount.minor, "currency": "CNY"},
                          queue=queue, max_attempts=8, idempotency_key=key, amount=amount,
                          settle=Settle.capture(hold, into=clearing))
            with keys_lock:
                keys.append(key)
                report.expiring_holds += expires_in is not None

    threads = [threading.Thread(target=withdraw, args=(i,)) for i in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    secret = secrets.token_hex(16)
    # The fake numbers its events from 1 in every run: a provider name per
    # run keeps a re-run's callbacks from being taken for duplicates.
    receiver = CallbackReceiver(db, provider=f"fake-{run_id}", secret=secret)
    with receiver.serve() as callbacks, FakeProvider(callback_url=callbacks.url, callback_secret=secret,
                                                    seed=len(run_id)) as provider:
        provider.fault_rates(**FAULT_RATES)
        provider.fault_defaults("timeout_after_apply", delay_ms=2 * HTTP_TIMEOUT_MS)
        provider.callback_mode(duplicate=2, shuffle=True)
        say(f"[5/6] paying through the fake provider at {provider.url} with faults on "
            f"(C++ HTTP handler, {thread_count} threads); callbacks to {callbacks.url} ...")
        registry = Registry()
        registry.http(
            "demo.payout",
            url=provider.url + "/payouts",
            body='{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
                 ' "currency": "{{payload.currency}}"}',
            timeout_ms=HTTP_TIMEOUT_MS,
            success_when={"return_code": "SUCCESS"},
            error_codes={"ACCOUNT_INVALID": "fail", "NOTENOUGH": "fail"},
            status_url=provider.url + "/payouts/{{task.idempotency_key}}",
            base_delay=timedelta(milliseconds=5),
            max_delay=timedelta(milliseconds=200),
        )
        # The worker also serves payq.alerts (its default handler, quiet
        # with log=False), so the alerts of this run's dead payouts are
        # handled rather than left pending.
        worker = Worker(db, queues=[queue], registry=registry, concurrency=max(2, thread_count // 2), batch=16,
                        poll_interval=timedelta(milliseconds=50), maintenance=True,
                        maintenance_interval=timedelta(milliseconds=200), log=False)
        shown = _Progress(sys.stdout if progress is None else progress)
        worker.start()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                stats = db.tasks.stats()
                counts = stats.get(queue, {})
                open_count = counts.get("pending", 0) + counts.get("running", 0)
                alerts = stats.get(ALERT_QUEUE, {})
                alerts_open = alerts.get("pending", 0) + alerts.get("running", 0)
                done = withdrawal_count - open_count
                shown.show(f"      {done}/{withdrawal_count} settled ({100 * done // max(1, withdrawal_count)}%),"
                           f" provider requests {provider.requests_total}")
                if open_count == 0 and alerts_open == 0:
                    break
                time.sleep(0.25)
            shown.end()
        finally:
            worker.stop()
        provider.callbacks_drain(timeout_s=30)
        applied = provider.applied
        report.provider_requests = provider.requests_total
        report.provider_max_calls_per_key = max((provider.request_count(k) for k in keys), default=0)
        report.provider_keys_paid_twice = sum(1 for k in keys if provider.applied_count(k) > 1)
    report.callbacks = dict(receiver.counts)

    say("[6/6] checking: states, ledger against provider key by key, ledger audit ...")
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
        for (count,) in t.execute(
                "SELECT count(*) FROM @schema@.hold h JOIN @schema@.task k ON k.id = h.task_id "
                "WHERE k.queue = $1 AND h.status = 'expired'", [queue]):
            report.holds_expired_under_payout = int(count or 0)
        for state, count in t.execute(
                "SELECT state, count(*) FROM @schema@.task WHERE kind = $1 AND payload->>'queue' = $2 "
                "GROUP BY state", [ALERT_KIND, queue]):
            report.alerts += int(count or 0)
            if state in ("pending", "running"):
                report.alerts_open += int(count or 0)
        states: Dict[str, str] = {
            str(key): str(state)
            for key, state in t.execute("SELECT idempotency_key, state FROM @schema@.task WHERE queue = $1", [queue])}
    for key in keys:
        state = states.get(key)
        if state == "needs_review":
            continue
        if (state == "succeeded") != (key in applied):
            report.ledger_provider_mismatches += 1
    report.provider_paid = Money(sum(applied.get(k, 0) for k in keys), "CNY")
    report.paid_out = ledger.get_account(clearing).balance
    total = held = Money(0, "CNY")
    for wallet in wallets:
        account = ledger.get_account(wallet)
        total = total + account.balance
        held = held + account.held
    report.left_in_wallets = total
    report.held_in_wallets = held
    audit = ledger.audit()
    report.audit_ok = audit.ok
    report.audit_violations = [str(v) for v in audit.violations]
    report.elapsed_s = time.monotonic() - started
    report.peak_rss_mib = _peak_rss_mib()
    return report
