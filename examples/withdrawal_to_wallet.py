"""Story 1: withdrawals from a wallet, paid by payq's built-in HTTP handler.

Customers withdraw money from their payq wallets to e-wallet accounts at a
payout provider. Each withdrawal is one local transaction: a hold on the
wallet and the payout task (its settlement: capture the hold into the
provider's clearing account). After commit the C++ worker calls the
provider with the withdrawal's idempotency key, without any Python in the
call path (``Registry.http``, see docs/http-handler.md), and settles:

- **paid**: the hold is captured, exactly once;
- **refused for good** (``ACCOUNT_INVALID``, ``NOTENOUGH``): ``fail``, the
  hold is released and the money is available again;
- **outcome unknown** (the answer timed out after the provider paid, or a
  500): the next attempt first asks the provider
  (``GET /payouts/<key>``, the kind's ``status_url``) and only pays again
  if the provider never saw the key;
- **rate limited** (429): retried after the provider's ``Retry-After``,
  with the queue paused for every worker meanwhile.

The provider also reports each final result to a callback endpoint
(``payq.inbox.CallbackReceiver(...).serve()``). Callbacks arrive late and
twice: a duplicate changes nothing, a callback for a withdrawal already
settled changes nothing, and the one withdrawal nothing else can settle
(a single attempt, its answer lost) is settled by its callback.

The provider is :class:`payq.testing.FakeProvider`, started in this
process with faults injected per withdrawal. At the end every invariant is
checked: every withdrawal settled, the provider moved money at most once
per key, the ledger's paid-out total equals what the provider applied, each
wallet's balance to the cent, and a clean ledger audit.

Run::

    python examples/withdrawal_to_wallet.py                       # payq's embedded server
    python examples/withdrawal_to_wallet.py --dsn "host=..." --schema app --run-id r1

The DSN defaults to ``PAYQ_DSN``, else payq's embedded server. The provider
token and the callback secret come from ``PAYQ_EXAMPLE_PROVIDER_TOKEN`` and
``PAYQ_EXAMPLE_CALLBACK_SECRET`` (random ones when unset). Exit status: 0
when every invariant holds, 1 when one is broken, 2 for a bad command line.
"""

from __future__ import annotations

import os
import secrets
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, Optional, Sequence

import payq
from payq import Account, Hold, Money, Settle
from payq.inbox import CallbackReceiver
from payq.testing import FakeProvider
from payq.worker import Registry, Worker
from example_support import WAIT_S_MAX, Invariants, example_main, wait_until

CURRENCY = "CNY"
WALLET_FUNDS = "500.00"
KIND = "wallet.payout"
TOKEN_ENV = "PAYQ_EXAMPLE_PROVIDER_TOKEN"
CALLBACK_SECRET_ENV = "PAYQ_EXAMPLE_CALLBACK_SECRET"
# The whole HTTP call. Far below the task's lease, so a call without an
# answer ends as ``unknown`` while this attempt still owns the task.
CALL_TIMEOUT_MS = 300
PAYOUT_LEASE = timedelta(seconds=10)
PAYOUT_ATTEMPT_COUNT_MAX = 6
# The provider holds a timed-out answer this long: well past CALL_TIMEOUT_MS.
LATE_ANSWER_MS = 2_000
# Callbacks come this long after the payout, so the worker's own status
# check normally settles an unknown outcome first and the callback finds
# it settled. Whichever comes first settles; the other changes nothing.
CALLBACK_DELAY_MS = 1_500
CALLBACK_COPIES = 2
FINAL_STATES = ("succeeded", "dead")


@dataclass(frozen=True)
class Withdrawal:
    """One customer's request: from their wallet to ``destination``.
    ``fault`` is what the fake provider does to its first call."""

    number: str
    customer: str
    destination: str
    amount: str
    fault: Optional[str]
    paid: bool  # the expected end: paid (hold captured) or refused (hold released)
    attempts_max: int = PAYOUT_ATTEMPT_COUNT_MAX
    story: str = ""


WITHDRAWALS = (
    Withdrawal("W-1", "ada", "alipay:ada-01", "120.00", None, paid=True, story="paid at once"),
    Withdrawal("W-2", "ben", "bad:closed-77", "50.00", None, paid=False,
               story="a closed account: ACCOUNT_INVALID, released"),
    Withdrawal("W-3", "cy", "alipay:cy-03", "80.00", "insufficient_funds", paid=False,
               story="the provider's funds ran out: NOTENOUGH, released"),
    Withdrawal("W-4", "dee", "wechat:dee-04", "200.00", "timeout_after_apply", paid=True,
               story="paid, but the answer timed out: the status check finds it paid"),
    Withdrawal("W-5", "eve", "alipay:eve-05", "30.00", "error_500", paid=True,
               story="a 500: the status check finds nothing, paid again with the same key"),
    Withdrawal("W-6", "fay", "wechat:fay-06", "60.00", "rate_limited", paid=True,
               story="429 Retry-After 1: the queue pauses, then paid"),
    Withdrawal("W-7", "gus", "alipay:gus-07", "90.00", "timeout_after_apply", paid=True, attempts_max=1,
               story="one attempt only, its answer lost: the provider's callback settles it"),
)


def fault_params(fault: str) -> Dict[str, Any]:
    """A late answer comes well after the call's timeout; a 429 asks for a second."""
    if fault == "timeout_after_apply":
        return {"delay_ms": LATE_ANSWER_MS}
    if fault == "rate_limited":
        return {"retry_after_s": 1}
    return {}


# ---------------------------------------------------------------- accounts and withdrawals


@dataclass(frozen=True)
class Books:
    """One run's accounts, queue and keys."""

    run_id: str
    world: Account
    clearing: Account
    wallets: Dict[str, Account]
    queue: str

    def key(self, withdrawal: Withdrawal) -> str:
        """The withdrawal's idempotency key: what the provider sees on every attempt."""
        return f"wd/{self.run_id}/{withdrawal.number}"


def namespace_of(run_id: str) -> str:
    return f"wallet-{run_id}"


def open_books(db: payq.Database, run_id: str) -> Books:
    ledger = db.ledger
    namespace = namespace_of(run_id)
    world = ledger.account("world", CURRENCY, namespace, allow_negative=True)
    wallets = {}
    for w in WITHDRAWALS:
        wallets[w.customer] = ledger.account(f"customer:{w.customer}", CURRENCY, namespace)
        ledger.transfer(world, wallets[w.customer], WALLET_FUNDS, key=f"wd/{run_id}/fund/{w.customer}",
                        kind="top_up")
    return Books(run_id=run_id, world=world,
                 clearing=ledger.account("provider-clearing", CURRENCY, namespace, allow_negative=True),
                 wallets=wallets, queue=f"example.wallet.{run_id}")


@dataclass(frozen=True)
class Requested:
    hold: Hold
    task_id: int
    created: bool


def request_withdrawal(db: payq.Database, books: Books, w: Withdrawal) -> Requested:
    """The hold and the payout task commit together, or neither does. The
    hold's key and the task's unique key make a repeated request a no-op."""
    key = books.key(w)
    with db.transaction() as t:
        hold = t.ledger.hold(books.wallets[w.customer], w.amount, key=f"{key}/hold")
        task = t.enqueue(KIND, {"account": w.destination, "amount_minor": hold.amount.minor, "currency": CURRENCY},
                         queue=books.queue, idempotency_key=key, unique_key=key, max_attempts=w.attempts_max,
                         timeout=PAYOUT_LEASE, amount=hold.amount, settle=Settle.capture(hold, into=books.clearing))
    return Requested(hold, task.task_id, task.created)


def payout_kind(provider_url: str) -> Registry:
    """The payout as configuration: the C++ worker calls the provider and
    classifies the answer; no Python runs per payout."""
    registry = Registry()
    registry.http(
        KIND,
        url=f"{provider_url}/payouts",
        headers={"Authorization": payq.secret_env(TOKEN_ENV, prefix="Bearer ")},
        body='{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
             ' "currency": "{{payload.currency}}"}',
        timeout_ms=CALL_TIMEOUT_MS,
        success_when={"return_code": "SUCCESS"},
        # Refusals the provider records as final for the key: no retry can help.
        error_codes={"ACCOUNT_INVALID": "fail", "NOTENOUGH": "fail"},
        status_url=provider_url + "/payouts/{{task.idempotency_key}}",
        base_delay=timedelta(milliseconds=50),
        max_delay=timedelta(milliseconds=500),
    )
    return registry


# ---------------------------------------------------------------- running


def all_settled(db: payq.Database, books: Books) -> bool:
    counts = db.tasks.stats().get(books.queue, {})
    return sum(n for state, n in counts.items() if state not in FINAL_STATES) == 0 \
        and sum(counts.values()) == len(WITHDRAWALS)


def pay(db: payq.Database, books: Books, provider: FakeProvider) -> bool:
    """A worker pays until every withdrawal is settled; then the provider's
    last callbacks are let in. True if all that finished in time."""
    worker = Worker(db, queues=[books.queue], registry=payout_kind(provider.url), concurrency=2,
                    poll_interval=timedelta(milliseconds=100), maintenance_interval=timedelta(milliseconds=200),
                    log=False)
    worker.start()
    try:
        settled = wait_until(lambda: all_settled(db, books), "every withdrawal to settle")
        drained = provider.callbacks_drain(timeout_s=WAIT_S_MAX)
        if not drained:
            print("    gave up waiting for the provider's callbacks")
        return settled and drained
    finally:
        worker.stop()


# ---------------------------------------------------------------- checks


def settled_by(db: payq.Database, task: payq.Task, provider_name: str) -> str:
    if any(a.actor == f"callback:{provider_name}" for a in db.tasks.actions(task.id)):
        return "the provider's callback"
    if isinstance(task.result, dict) and task.result.get("via") == "status_query":
        return "the status check"
    return "the worker"


def inbox_effects(db: payq.Database, provider_name: str) -> Dict[str, str]:
    """{idempotency key: effect} of the callbacks recorded for this run."""
    with db.transaction() as t:
        rows = t.execute("SELECT task_key, effect FROM @schema@.inbox_event WHERE provider = $1 ORDER BY task_key",
                         [provider_name])
    return {str(key): str(effect) for key, effect in rows}


def check(db: payq.Database, books: Books, requested: Dict[str, Requested], provider: FakeProvider, provider_name: str,
          receiver: CallbackReceiver) -> Invariants:
    inv = Invariants()
    ledger = db.ledger
    keys = [books.key(w) for w in WITHDRAWALS]
    effects = inbox_effects(db, provider_name)
    for w in WITHDRAWALS:
        key = books.key(w)
        task = db.tasks.get(requested[w.number].task_id)
        hold = ledger.get_hold(requested[w.number].hold.id)
        state, hold_status = ("succeeded", "captured") if w.paid else ("dead", "released")
        outcomes = [a.outcome for a in db.tasks.attempts(task.id)]
        inv.check(task.state == state and hold.status == hold_status,
                  f"{key} ({w.story}): task {task.state}, hold {hold.status}; attempts {outcomes}; "
                  f"settled by {settled_by(db, task, provider_name)}")
        applied = provider.applied_count(key)
        inv.check(applied == (1 if w.paid else 0),
                  f"{key}: the provider moved the money {applied} time(s) in {provider.request_count(key)} "
                  "request(s)")
        inv.check(key in effects, f"{key}: the provider's callback recorded ({effects.get(key)})")
    late = [books.key(w) for w in WITHDRAWALS if w.fault == "timeout_after_apply" and w.attempts_max > 1]
    inv.check(all(provider.request_count(k) == 1 for k in late),
              "an answer lost after the payment was never paid for again (one POST each)")
    inv.check(effects.get(books.key(WITHDRAWALS[-1])) == "settled_success",
              f"{books.key(WITHDRAWALS[-1])}: settled by its callback")
    inv.check(not {"conflict", "no_task", "ignored"} & set(effects.values()),
              f"no callback contradicted the ledger ({sorted(set(effects.values()))})")
    inv.check(receiver.counts.get("duplicate", 0) == len(WITHDRAWALS) * (CALLBACK_COPIES - 1),
              f"each re-sent callback was a duplicate and changed nothing ({receiver.counts})")
    applied_minor = sum(minor for k, minor in provider.applied.items() if k in keys)
    clearing = ledger.get_account(books.clearing)
    inv.check(clearing.balance == Money(applied_minor, CURRENCY),
              f"paid out in the ledger {clearing.balance} == applied by the provider "
              f"{Money(applied_minor, CURRENCY)}")
    for w in WITHDRAWALS:
        wallet = ledger.get_account(books.wallets[w.customer])
        spent = Money(w.amount if w.paid else 0, CURRENCY)
        inv.check(wallet.balance == Money(WALLET_FUNDS, CURRENCY) - spent and wallet.held == Money(0, CURRENCY),
                  f"{w.customer}'s wallet: {wallet.balance}, {wallet.held} held")
    audit = ledger.audit()
    for violation in audit.violations:
        print(f"    audit: {violation}")
    inv.check(audit.ok, f"ledger audit clean ({audit.accounts_checked} accounts, {audit.entries_checked} entries)")
    return inv


# ---------------------------------------------------------------- the run


def secret_from_environment(variable: str) -> str:
    """The variable's value; a random one (set in this process, for payq's
    ``secret_env`` and the in-process provider) when it is unset."""
    if not os.environ.get(variable):
        os.environ[variable] = secrets.token_urlsafe(24)
    return os.environ[variable]


def run(db: payq.Database, run_id: str) -> int:
    token = secret_from_environment(TOKEN_ENV)
    callback_secret = secret_from_environment(CALLBACK_SECRET_ENV)
    # The fake numbers its callback events from 1 in every process, so the
    # inbox knows this run's provider by a name of its own.
    provider_name = f"fake-wallet-{run_id}"
    receiver = CallbackReceiver(db, provider=provider_name, secret=callback_secret)
    if db.ledger.find_account("provider-clearing", CURRENCY, namespace_of(run_id)) is not None:
        # That run's provider lived in its process and is gone: nothing to check against.
        print(f"run id {run_id!r} was used before on this schema; choose another", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        endpoint = stack.enter_context(receiver.serve())
        provider = stack.enter_context(FakeProvider(token=token, callback_url=endpoint.url,
                                                    callback_secret=callback_secret, seed=1))
        provider.callback_mode(duplicate=CALLBACK_COPIES, delay_ms=CALLBACK_DELAY_MS)
        print(f"[1/4] wallets of {WALLET_FUNDS} {CURRENCY} each (run {run_id}); provider {provider.url}, "
              f"callbacks to {endpoint.url}")
        books = open_books(db, run_id)
        for w in WITHDRAWALS:
            if w.fault is not None:
                provider.fault_next(w.fault, key=books.key(w), **fault_params(w.fault))

        print("[2/4] each withdrawal: the hold and the payout task in one transaction ...")
        requested: Dict[str, Requested] = {}
        for w in WITHDRAWALS:
            r = requested[w.number] = request_withdrawal(db, books, w)
            print(f"    {books.key(w)}: {w.amount} {CURRENCY} from {w.customer} to {w.destination}: "
                  f"hold {r.hold.id}, task {r.task_id}{'' if r.created else ' (found: already requested)'}")

        print(f"[3/4] the C++ worker pays through the provider (timeout {CALL_TIMEOUT_MS} ms); "
              f"callbacks come {CALLBACK_DELAY_MS} ms late, {CALLBACK_COPIES} copies each ...")
        finished = pay(db, books, provider)
        print(f"    provider: {provider.requests_total} requests, {len(provider.applied)} payouts applied; "
              f"callbacks: {receiver.counts}")

        print("[4/4] checking every invariant ...")
        inv = check(db, books, requested, provider, provider_name, receiver)
        inv.check(finished, "every withdrawal settled and every callback delivered in time")
    return inv.exit_status("every withdrawal settled once; the provider paid each at most once; "
                           "ledger and provider agree")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return example_main("payq example: withdrawals paid by the built-in HTTP handler",
                        "names this run's accounts, queue and keys (default: random)", run, argv)


if __name__ == "__main__":
    sys.exit(main())
