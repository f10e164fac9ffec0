"""Failover without loss (issue 14, capability 3).

A primary with a synchronous standby (payq.testing.replicated); payq on a
multi-host DSN with target_session_attrs=read-write. Application threads
make withdrawals (a hold plus a payout task that captures it, as in the
demo) and small keyed transfers, while a worker pays the withdrawals
through the built-in HTTP handler against the fake provider. Mid-run the
primary is stopped in immediate mode and the standby promoted.

The application does what the docs ask of it: a request that failed with
ConnectionLost or another DatabaseError is sent again with the same keys,
and a CommitUnknown is re-checked by replaying the same keys (the replay
returns what was committed, or commits it now). Then: every withdrawal is
final, none was paid twice, every acknowledged withdrawal and transfer is
on the new primary with the ids it was acknowledged with, the ledger audit
is clean, and money is conserved. The time from the primary's loss to the
first commit on the new primary is measured and printed, not asserted.
Both servers run with fsync=off, for speed (see payq.testing.replicated).

A second test shows what the application sees while the synchronous
standby is away: its commit waits, without an error, until the standby is
back.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Tuple, TypeVar

import pytest

import payq
from payq import Money, Settle
from payq.testing import FakeProvider, wait_until
from payq.testing.replicated import ReplicatedCluster
from payq.worker import Registry, Worker

T = TypeVar("T")

WALLET_COUNT = 50
WALLET_FUNDING_MINOR = 2_000_00  # 2000.00 CNY: far more than a wallet's withdrawals
WITHDRAWAL_COUNT = 2_000
WITHDRAWAL_THREAD_COUNT = 4
BAD_ACCOUNT_SHARE = 0.02            # refused by the provider: the hold is released
FAILOVER_AFTER_ACKNOWLEDGED = 700   # withdrawals acknowledged before the primary is stopped
TIP_MINOR = 1_00
TIP_COUNT_MAX = 5_000
# The application's retry of one request: short random pauses, so the
# measured failover time is payq's and the server's, not the backoff's.
REQUEST_ATTEMPT_COUNT_MAX = 600
REQUEST_RETRY_DELAY_S = (0.01, 0.04)
TASK_LEASE = timedelta(seconds=4)   # claims lost in the failover are rescued after this
HTTP_TIMEOUT_MS = 500
RUN_DEADLINE_S = 75.0               # every loop of the test ends by then
POLL_S = 0.05
JOIN_TIMEOUT_S = 10.0
PROVIDER_FAULTS = {"error_500": 0.02, "drop_after_apply": 0.01}


@dataclass
class Acknowledged:
    """What the application was told, per key, and when."""

    withdrawals: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # key: (task id, hold id)
    transfers: Dict[str, int] = field(default_factory=dict)                # key: ledger transaction id
    commit_times: List[float] = field(default_factory=list)               # monotonic, each acknowledgement
    errors: "Counter[str]" = field(default_factory=Counter)                # error class: count
    replays_created: int = 0      # a retry that committed the request (the failed try had not)
    replays_found: int = 0        # a retry that found it committed (the failed try had, unknowingly)
    applied_despite_error: List[str] = field(default_factory=list)  # keys: an error said "not applied"
    thread_failures: List[str] = field(default_factory=list)       # an application thread that raised
    lock: threading.Lock = field(default_factory=threading.Lock)

    def commit_seen(self) -> None:
        with self.lock:
            self.commit_times.append(time.monotonic())

    def thread(self, target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
        """An application thread whose exception is recorded for the test."""
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                with self.lock:
                    self.thread_failures.append(f"{name}: {type(exc).__name__}: {exc}")
        return threading.Thread(target=run, name=name)


@pytest.fixture
def cluster() -> Iterator[ReplicatedCluster]:
    with ReplicatedCluster() as replicated:
        yield replicated


def _request(run: Callable[[], T], acknowledged: Acknowledged, deadline: float) -> Tuple[T, List[str]]:
    """Run one application request until it is acknowledged, retrying it
    (with the same keys) after a database error; returns the result and the
    error classes of the tries that failed."""
    failures: List[str] = []
    for _ in range(REQUEST_ATTEMPT_COUNT_MAX):
        try:
            result = run()
        except payq.DatabaseError as exc:  # ConnectionLost, CommitUnknown, cannot connect, ...
            failures.append(type(exc).__name__)
            with acknowledged.lock:
                acknowledged.errors[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(*REQUEST_RETRY_DELAY_S))
            continue
        acknowledged.commit_seen()
        return result, failures
    raise AssertionError(f"a request failed {REQUEST_ATTEMPT_COUNT_MAX} times in a row")


def _replay_checked(key: str, failures: List[str], found_committed: bool, acknowledged: Acknowledged) -> None:
    """Counts what a retry found; a request that failed only with errors
    that mean "nothing was applied" (all but CommitUnknown) must not be
    found committed by its replay."""
    if not failures:
        return
    with acknowledged.lock:
        if not found_committed:
            acknowledged.replays_created += 1
            return
        acknowledged.replays_found += 1
        if "CommitUnknown" not in failures:
            acknowledged.applied_despite_error.append(f"{key} ({', '.join(failures)})")


def _log_time(event: Dict[str, Any]) -> float:
    """A worker log line's time (UTC, milliseconds) as a Unix time."""
    return datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def _worker_events(stderr: str) -> List[Dict[str, Any]]:
    """The worker's JSON log lines among the captured stderr."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{") and '"event"' in line:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def test_failover_loses_nothing_and_pays_nothing_twice(cluster: ReplicatedCluster,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    deadline = started + RUN_DEADLINE_S
    db = payq.connect(cluster.dsn, schema="failover", migrate=True)
    ns = "failover"
    queue = "payouts"
    ledger = db.ledger
    world = ledger.account("world", "CNY", ns, allow_negative=True)
    clearing = ledger.account("provider-clearing", "CNY", ns, allow_negative=True)
    tips = ledger.account("tips", "CNY", ns)
    wallets = [ledger.account(f"user:{i}", "CNY", ns) for i in range(WALLET_COUNT)]
    for wallet in wallets:
        ledger.transfer(world, wallet, Money(WALLET_FUNDING_MINOR, "CNY"), key=f"fund/{wallet.id}")

    acknowledged = Acknowledged()
    withdrawals_done = threading.Event()
    amounts: Dict[str, int] = {}

    def withdraw_once(n: int, wallet: payq.Account, amount: Money, account: str) -> Tuple[int, int, bool]:
        key = f"wd/{n}"
        with db.transaction() as t:
            hold = t.ledger.hold(wallet, amount, key=f"{key}/hold")
            result = t.enqueue("payout", {"account": account, "amount_minor": amount.minor, "currency": "CNY"},
                               queue=queue, max_attempts=10, idempotency_key=key, amount=amount,
                               timeout=TASK_LEASE, settle=Settle.capture(hold, into=clearing))
        return result.task_id, hold.id, result.created

    def withdrawals(index: int) -> None:
        rng = random.Random(index)
        for n in range(index, WITHDRAWAL_COUNT, WITHDRAWAL_THREAD_COUNT):
            wallet = wallets[rng.randrange(WALLET_COUNT)]
            amount = Money(rng.randint(100, 5_000), "CNY")
            account = ("bad:" if rng.random() < BAD_ACCOUNT_SHARE else "wallet:") + str(n)
            key = f"wd/{n}"
            (task_id, hold_id, created), failures = _request(
                lambda: withdraw_once(n, wallet, amount, account), acknowledged, deadline)
            _replay_checked(key, failures, not created, acknowledged)
            with acknowledged.lock:
                acknowledged.withdrawals[key] = (task_id, hold_id)
                amounts[key] = amount.minor

    def transfers() -> None:
        # Small keyed transfers until the withdrawals are in: commits that
        # go on through the failover, each acknowledged one checked later.
        for n in range(TIP_COUNT_MAX):
            if withdrawals_done.is_set() or time.monotonic() > deadline:
                return
            key = f"tip/{n}"
            posted, failures = _request(lambda: ledger.transfer(world, tips, Money(TIP_MINOR, "CNY"), key=key),
                                        acknowledged, deadline)
            _replay_checked(key, failures, posted.replayed, acknowledged)
            with acknowledged.lock:
                acknowledged.transfers[key] = posted.id

    with FakeProvider(seed=14) as provider:
        provider.fault_rates(**PROVIDER_FAULTS)
        registry = Registry()
        registry.http(
            "payout",
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
        worker = Worker(db, queues=[queue], registry=registry, concurrency=2, batch=16,
                        poll_interval=timedelta(milliseconds=50), maintenance=True,
                        maintenance_interval=timedelta(milliseconds=200), shutdown_grace=timedelta(seconds=5),
                        log=True)
        worker.start()
        try:
            threads = [acknowledged.thread(withdrawals, i, name=f"withdraw-{i}")
                       for i in range(WITHDRAWAL_THREAD_COUNT)]
            threads.append(acknowledged.thread(transfers, name="transfers"))
            for thread in threads:
                thread.start()
            try:
                while len(acknowledged.withdrawals) < FAILOVER_AFTER_ACKNOWLEDGED:
                    assert time.monotonic() < deadline, "too slow to reach the failover point"
                    assert all(t.is_alive() for t in threads[:-1]), acknowledged.thread_failures
                    time.sleep(POLL_S)
                with acknowledged.lock:
                    acknowledged_before = dict(acknowledged.withdrawals)
                    transfers_before = dict(acknowledged.transfers)
                lost_at, lost_at_wall = time.monotonic(), time.time()
                cluster.primary_stop_immediate()
                stopped_at = time.monotonic()
                stopped_at_wall = time.time()
                cluster.standby_promote()
                promoted_at = time.monotonic()
            finally:
                for thread in threads[:-1]:
                    thread.join(max(0.0, deadline - time.monotonic()) + JOIN_TIMEOUT_S)
                withdrawals_done.set()
                threads[-1].join(JOIN_TIMEOUT_S)
            assert not any(t.is_alive() for t in threads), "an application thread did not finish"

            # Every withdrawal final: the worker pays the rest on the new primary.
            counts: Dict[str, int] = {}
            while time.monotonic() < deadline:
                try:
                    counts = db.tasks.stats().get(queue, {})
                except payq.DatabaseError:
                    counts = {}
                if counts and counts.get("pending", 0) + counts.get("running", 0) == 0:
                    break
                time.sleep(POLL_S)
        finally:
            worker.stop()
        stats = worker.stats()
        applied = provider.applied
        applied_twice = [k for k in amounts if provider.applied_count(k) > 1]
        requests_max = max(provider.request_count(k) for k in amounts)

    first_commit_after = min((t for t in acknowledged.commit_times if t > stopped_at), default=None)
    events = _worker_events(capfd.readouterr().err)
    # The worker's own view of the outage: one line each way per part.
    outage_events = ("database_unavailable", "database_available", "listener_failed", "listener_listening",
                     "maintenance_failed", "maintenance_leader_acquired")
    outage = [e for e in events if e["event"] in outage_events and _log_time(e) > lost_at_wall]
    paid_after = [_log_time(e) for e in events if e["event"] == "task_done" and _log_time(e) > stopped_at_wall]
    with capfd.disabled():
        print()
        print(f"failover: primary stopped in {1000 * (stopped_at - lost_at):.0f} ms, "
              f"standby promoted in {1000 * (promoted_at - stopped_at):.0f} ms")
        if first_commit_after is not None:
            print(f"failover: first commit on the new primary {1000 * (first_commit_after - lost_at):.0f} ms "
                  f"after the primary was lost")
        if paid_after:
            print(f"failover: the worker's first completion on the new primary "
                  f"{1000 * (min(paid_after) - lost_at_wall):.0f} ms after the primary was lost")
        print(f"failover: acknowledged before the failover: {len(acknowledged_before)} withdrawals, "
              f"{len(transfers_before)} transfers")
        print(f"failover: application errors {dict(acknowledged.errors)}; retried withdrawals that committed "
              f"on retry {acknowledged.replays_created}, found already committed {acknowledged.replays_found}"
              f" (after an error that said nothing was applied: {acknowledged.applied_despite_error})")
        print(f"failover: worker database_errors={stats['database_errors']} complete_errors="
              f"{stats['complete_errors']} leases_rescued={stats['leases_rescued']} unknown={stats['unknown']}; "
              + ", ".join(f"{e['event']} at {1000 * (_log_time(e) - lost_at_wall):.0f} ms" for e in outage))
        print(f"failover: task states {counts}; provider requests per key at most {requests_max}; "
              f"test ran {time.monotonic() - started:.1f} s")

    # Every request was acknowledged in the end; an error other than
    # CommitUnknown meant "nothing applied"; and nothing the application
    # was told before the failover is missing after it.
    assert acknowledged.thread_failures == []
    assert len(acknowledged.withdrawals) == WITHDRAWAL_COUNT
    assert acknowledged.applied_despite_error == []
    assert first_commit_after is not None, "nothing committed after the failover"
    with db.transaction() as t:
        rows = t.execute("SELECT k.idempotency_key, k.id, k.state, h.id, h.status FROM @schema@.task k "
                         "JOIN @schema@.hold h ON h.task_id = k.id WHERE k.queue = $1", [queue])
    tasks = {str(key): (int(str(task_id)), str(state), int(str(hold_id)), str(hold_status))
             for key, task_id, state, hold_id, hold_status in rows}
    assert len(rows) == WITHDRAWAL_COUNT, "a withdrawal has no task, or more than one"
    for key, (task_id, hold_id) in acknowledged.withdrawals.items():
        assert key in tasks, f"acknowledged withdrawal {key} is missing on the new primary"
        assert tasks[key][0] == task_id and tasks[key][2] == hold_id, f"withdrawal {key} is not the acknowledged one"
    for key, transaction_id in acknowledged.transfers.items():
        found = ledger.find_transaction(key)
        assert found is not None and found.id == transaction_id, f"acknowledged transfer {key} is missing"

    # Every withdrawal final, its hold settled the way the provider decided,
    # none paid twice.
    assert counts.get("pending", 0) + counts.get("running", 0) + counts.get("needs_review", 0) == 0, counts
    assert applied_twice == []
    for key, (_, state, _, hold_status) in tasks.items():
        paid = key in applied
        assert state == ("succeeded" if paid else "dead"), f"{key}: task {state}, provider paid: {paid}"
        assert hold_status == ("captured" if paid else "released"), f"{key}: hold {hold_status}"
        if paid:
            assert applied[key] == amounts[key]

    # Money: the audit is clean, the provider paid what the ledger captured,
    # and the wallets hold what they were funded minus what was paid.
    audit = ledger.audit()
    assert audit.ok, [str(v) for v in audit.violations]
    paid_out = ledger.get_account(clearing).balance
    assert paid_out == Money(sum(applied[k] for k in amounts if k in applied), "CNY")
    left = held = Money(0, "CNY")
    for wallet in wallets:
        account = ledger.get_account(wallet)
        left, held = left + account.balance, held + account.held
    assert held == Money(0, "CNY")
    assert left + paid_out == Money(WALLET_FUNDING_MINOR * WALLET_COUNT, "CNY")
    assert ledger.get_account(tips).balance == Money(TIP_MINOR * len(acknowledged.transfers), "CNY")
    assert ledger.get_account(world).balance == -(left + paid_out + ledger.get_account(tips).balance)


def test_commit_waits_while_the_synchronous_standby_is_away(cluster: ReplicatedCluster) -> None:
    """With the standby away, a commit waits for it: the application's call
    blocks without an error (payq sets no timeout on it), the transaction
    is invisible to other sessions, and it completes, replicated, once the
    standby is back."""
    deadline = time.monotonic() + RUN_DEADLINE_S
    db = payq.connect(cluster.dsn, schema="away", migrate=True)
    ledger = db.ledger
    world = ledger.account("world", "CNY", "away", allow_negative=True)
    wallet = ledger.account("user:1", "CNY", "away")
    ledger.transfer(world, wallet, Money(100, "CNY"), key="away/0")
    cluster.standby_stop()
    outcome: Dict[str, object] = {}

    def transfer() -> None:
        try:
            outcome["posted"] = ledger.transfer(world, wallet, Money(100, "CNY"), key="away/1")
        except payq.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=transfer, name="transfer")
    thread.start()
    try:
        # The signal: the server holds the COMMIT until the standby confirms.
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        while cluster.sql("primary", waiting) != "1":
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(POLL_S)
        assert outcome == {}
        assert ledger.find_transaction("away/1") is None  # not visible while it waits
    finally:
        cluster.standby_start()
        thread.join(JOIN_TIMEOUT_S)
    assert not thread.is_alive()
    posted = outcome.get("posted")
    assert isinstance(posted, payq.LedgerTransaction) and not posted.replayed, outcome
    assert ledger.find_transaction("away/1") is not None
    replayed = "SELECT count(*) FROM away.operation WHERE key = 'away/1'"
    while cluster.sql("standby", replayed) != "1":  # flushed there before the ack; applied soon after
        assert time.monotonic() < deadline
        time.sleep(POLL_S)


def test_reads_come_from_the_standby_with_its_lag_shown() -> None:
    # Issue 14, capability 5: `payq ledger history`, the audit and the
    # dashboard's pages read from the standby of read_dsn; writes stay on
    # the primary, and the lag is shown.
    with ReplicatedCluster() as cluster:
        db = payq.connect(cluster.primary_dsn, schema="reads", migrate=True, read_dsn=cluster.standby_dsn)
        assert db.reader is not db and db.reader.dsn == cluster.standby_dsn
        ledger = db.ledger
        world = ledger.account("world", "CNY", "system", allow_negative=True)
        alice = ledger.account("alice", "CNY")
        ledger.transfer(world, alice, "12.00", key="fund")
        # synchronous_commit=on waits for the standby's flush, not its replay:
        # the standby shows the transfer a moment later (that is the lag).

        def replayed() -> bool:
            try:
                return db.reader.ledger.get_account(alice).balance == Money("12.00", "CNY")
            except (payq.DatabaseError, payq.UnknownAccount):
                return False  # the schema, or the account, may not be replayed yet

        assert wait_until(replayed, 30)
        lag = db.replication_lag()
        assert lag is not None and lag.total_seconds() >= 0
        assert payq.connect(cluster.primary_dsn, schema="reads").replication_lag() is None  # no standby named
        with pytest.raises(payq.ConfigError, match="read-only"):
            db.reader.ledger.account("bob", "CNY")  # the standby refuses writes, typed
        cli = subprocess.run([sys.executable, "-m", "payq", "--dsn", cluster.primary_dsn, "--read-dsn",
                              cluster.standby_dsn, "--schema", "reads", "ledger", "history", str(alice.id)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert "12.00" in cli.stdout and "reading from a standby (lag" in cli.stderr
