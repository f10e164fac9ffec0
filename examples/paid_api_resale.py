"""Story 2: a paid third-party API, resold to users for points.

A platform resells two paid APIs (a geocoder and an identity check) to its
users. Users buy **points** (a custom ledger currency, ``POINTS``, defined
with ``ledger.define_currency``); each API request costs points. The
providers bill the platform per call, so a call must never be paid twice,
and a user must never be charged for a call that never happened.

- **Buying points** is one balanced ledger transaction in two currencies:
  the user's cash to the platform (CNY) and points to the user (POINTS).
- **A request** is one local transaction: a hold on the user's points and
  the API call task (settlement: capture the hold into the API's spent
  points). A user without enough points is refused there, and nothing is
  written. The request id is the task's **unique key**: a client sending
  the same request twice gets the same task and the same hold.
- **Each provider has its own queue with a rate limit**
  (``db.queues.configure(name, rate=(n, timedelta))``), held across every
  worker; the calls are made by payq's built-in HTTP handler.
- **The provider's answer is persisted** as the task's result. A retry
  after an unknown outcome asks the provider for the stored answer before
  paying again (``status_url``), and a request sent again after it was
  answered is served from the task's result without calling the provider.
- **Final failure refunds**: an invalid query (``ACCOUNT_INVALID``) fails
  at once, a call that keeps meeting the provider's quota error is retried
  until its attempts run out; either way the hold is released.

The providers are two :class:`payq.testing.FakeProvider` instances in this
process, with random faults on (500s, answers lost after the provider
billed, dropped connections): the fake's payout id stands in for the API's
answer and its ``amount_minor`` for what the call costs the platform.

At the end every invariant is checked: points conserved, each request
charged at most once (captured if answered, released otherwise), each
provider billed at most once per request and exactly for the answered
ones, no rate window exceeded, a clean ledger audit.

Run::

    python examples/paid_api_resale.py                       # payq's embedded server
    python examples/paid_api_resale.py --dsn "host=..." --schema app --run-id r1

The DSN defaults to ``PAYQ_DSN``, else payq's embedded server. Exit status:
0 when every invariant holds, 1 when one is broken, 2 for a bad command line.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Dict, Optional, Sequence

import payq
from payq import Account, Hold, Money, Settle
from payq.testing import FakeProvider
from payq.worker import Registry, Worker
from example_support import Invariants, example_main, wait_until

POINTS = "POINTS"
POINTS_EXPONENT = 0
CASH = "CNY"
# The whole HTTP call; far below the lease, so a lost answer is ``unknown``
# while the attempt still owns its task.
CALL_TIMEOUT_MS = 300
CALL_LEASE = timedelta(seconds=10)
CALL_ATTEMPT_COUNT_MAX = 6
FINAL_STATES = ("succeeded", "dead")
# Random provider faults on every call without a planned one.
FAULT_RATES = {"error_500": 0.15, "timeout_after_apply": 0.10, "drop_after_apply": 0.05}
# How late a lost answer comes: well past CALL_TIMEOUT_MS.
LATE_ANSWER_MS = 1_000


@dataclass(frozen=True)
class Api:
    """A resold API: what a call costs the user, what it costs the platform,
    and the provider's rate limit (calls per window)."""

    name: str
    price_points: int
    cost_minor: int  # CNY fen billed by the provider per answered call
    rate_count_max: int
    rate_window: timedelta

    @property
    def kind(self) -> str:
        return f"resale.{self.name}.call"


APIS = {
    "geo": Api("geo", price_points=2, cost_minor=3, rate_count_max=5, rate_window=timedelta(seconds=1)),
    "kyc": Api("kyc", price_points=10, cost_minor=40, rate_count_max=3, rate_window=timedelta(seconds=1)),
}


@dataclass(frozen=True)
class Purchase:
    user: str
    points: int
    price: str  # CNY


PURCHASES = (Purchase("ada", 100, "10.00"), Purchase("ben", 50, "5.00"), Purchase("cy", 12, "1.20"))


@dataclass(frozen=True)
class ApiRequest:
    """One user request. ``answered`` is the expected end: the call
    answered and charged, or refunded."""

    number: str
    user: str
    api: str
    query: str
    answered: bool = True
    story: str = ""


CITIES = ("Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan", "Xi'an", "Nanjing")
REQUESTS = (
    *(ApiRequest(f"G-{i + 1}", "ada", "geo", f"geo:{city}") for i, city in enumerate(CITIES)),
    *(ApiRequest(f"G-{i + 9}", "ben", "geo", f"geo:{city}") for i, city in enumerate(CITIES[:4])),
    ApiRequest("K-1", "ada", "kyc", "kyc:id-110101-1990"),
    ApiRequest("K-2", "ada", "kyc", "kyc:id-310101-1985"),
    ApiRequest("K-3", "ben", "kyc", "bad:id-000000", answered=False,
               story="an invalid id: ACCOUNT_INVALID at once, refunded"),
    ApiRequest("K-4", "ben", "kyc", "kyc:id-440301-1979", answered=False,
               story="the provider's quota error on every attempt: refunded when attempts run out"),
    ApiRequest("K-5", "cy", "kyc", "kyc:id-510101-2001"),
)
# Sent right after its first copy, as a client that timed out would.
DUPLICATE = "G-1"
# cy's 12 points pay for K-5 only: this one is refused before anything is written.
REFUSED = ApiRequest("K-6", "cy", "kyc", "kyc:id-510101-2002", answered=False)
# Asked again once answered: served from the stored answer.
ASKED_AGAIN = "K-1"
QUOTA_CODE = "QUOTA_EXCEEDED"


# ---------------------------------------------------------------- accounts, queues, requests


def namespace_of(run_id: str) -> str:
    return f"resale-{run_id}"


@dataclass(frozen=True)
class Books:
    """One run's accounts, queues and keys."""

    run_id: str
    cash: Account  # the outside world, in CNY
    sales: Account  # what users paid for points
    issued: Account  # points issued to users (goes negative)
    users: Dict[str, Account]
    spent: Dict[str, Account]  # points spent per API

    def key(self, request: ApiRequest) -> str:
        """The request's unique and idempotency key."""
        return f"api/{self.run_id}/{request.number}"

    def queue(self, api: Api) -> str:
        return f"example.api.{api.name}.{self.run_id}"


def open_books(db: payq.Database, run_id: str) -> Books:
    ledger = db.ledger
    # Registered in the database and in this process; the same exponent
    # again is a no-op, so every run (and every process) may do it.
    ledger.define_currency(POINTS, POINTS_EXPONENT)
    ns = namespace_of(run_id)
    return Books(
        run_id=run_id,
        cash=ledger.account("cash", CASH, ns, allow_negative=True),
        sales=ledger.account("points-sales", CASH, ns),
        issued=ledger.account("points-issued", POINTS, ns, allow_negative=True),
        users={p.user: ledger.account(f"user:{p.user}", POINTS, ns) for p in PURCHASES},
        spent={api.name: ledger.account(f"spent:{api.name}", POINTS, ns) for api in APIS.values()},
    )


def buy_points(db: payq.Database, books: Books, purchase: Purchase) -> payq.LedgerTransaction:
    """Cash in and points out, balanced per currency, in one transaction."""
    return db.ledger.post([(books.cash, f"-{purchase.price}"), (books.sales, purchase.price),
                           (books.issued, -purchase.points), (books.users[purchase.user], purchase.points)],
                          key=f"api/{books.run_id}/buy/{purchase.user}", kind="points_purchase",
                          metadata={"points": purchase.points, "paid": f"{purchase.price} {CASH}"})


@dataclass(frozen=True)
class Requested:
    hold: Hold
    task_id: int
    created: bool


def request_api(db: payq.Database, books: Books, request: ApiRequest) -> Optional[Requested]:
    """The points hold and the call task, in one transaction; None if the
    user lacks the points (then nothing was written). The same request
    again finds both (same hold key, same unique key)."""
    api = APIS[request.api]
    key = books.key(request)
    try:
        with db.transaction() as t:
            hold = t.ledger.hold(books.users[request.user], api.price_points, key=f"{key}/hold")
            task = t.enqueue(api.kind, {"query": request.query, "cost_minor": api.cost_minor}, queue=books.queue(api),
                             unique_key=key, idempotency_key=key, max_attempts=CALL_ATTEMPT_COUNT_MAX,
                             timeout=CALL_LEASE, amount=hold.amount,
                             settle=Settle.capture(hold, into=books.spent[api.name]))
    except payq.InsufficientFunds:
        return None
    return Requested(hold, task.task_id, task.created)


@dataclass(frozen=True)
class Replay:
    """A request sent again after it was answered, and what the user got."""

    request: ApiRequest
    requested: Optional[Requested]
    answer: Optional[str]


def ask_again(db: payq.Database, books: Books, request: ApiRequest) -> Replay:
    """The same request again: its unique key finds the answered task (no
    new task, so no new call) and its hold key the captured hold (no new
    charge); the answer comes from the task's stored result."""
    requested = request_api(db, books, request)
    answer = None
    if requested is not None and not requested.created:
        answer = answer_of(db.tasks.get(requested.task_id))
    return Replay(request, requested, answer)


def answer_of(task: payq.Task) -> Optional[str]:
    """What the user gets back: the provider's answer, stored as the task's
    result by the HTTP handler (``{"status", "body", ...}``)."""
    if task.state != "succeeded" or not isinstance(task.result, dict):
        return None
    body = task.result.get("body")
    return str(body.get("payout_id")) if isinstance(body, dict) else None


def call_kinds(providers: Dict[str, FakeProvider]) -> Registry:
    """One HTTP kind per provider; the C++ worker makes the calls."""
    registry = Registry()
    for name, api in APIS.items():
        url = providers[name].url
        registry.http(
            api.kind,
            url=f"{url}/payouts",
            body='{"account": "{{payload.query}}", "amount_minor": {{payload.cost_minor}}, "currency": "' + CASH + '"}',
            timeout_ms=CALL_TIMEOUT_MS,
            success_when={"return_code": "SUCCESS"},
            # An invalid query never succeeds; a quota error may pass later.
            error_codes={"ACCOUNT_INVALID": "fail", "NOTENOUGH": "fail", QUOTA_CODE: "retry"},
            status_url=url + "/payouts/{{task.idempotency_key}}",
            base_delay=timedelta(milliseconds=50),
            max_delay=timedelta(milliseconds=400),
        )
    return registry


# ---------------------------------------------------------------- running


def all_settled(db: payq.Database, books: Books, expected: int) -> bool:
    stats = db.tasks.stats()
    counts: Counter[str] = Counter()
    for api in APIS.values():
        counts.update(stats.get(books.queue(api), {}))
    return sum(counts.values()) == expected and all(state in FINAL_STATES for state in +counts)


def call_apis(db: payq.Database, books: Books, providers: Dict[str, FakeProvider], expected: int) -> bool:
    worker = Worker(db, queues=[books.queue(api) for api in APIS.values()], registry=call_kinds(providers),
                    concurrency=2, poll_interval=timedelta(milliseconds=100),
                    maintenance_interval=timedelta(milliseconds=200), log=False)
    worker.start()
    try:
        return wait_until(lambda: all_settled(db, books, expected), "every request to settle")
    finally:
        worker.stop()


# ---------------------------------------------------------------- checks


def busiest_window(db: payq.Database, queue: str, window: timedelta) -> int:
    """The most starts the queue made in any window of that length (payq
    records every start of a rate-limited queue in ``queue_start``)."""
    with db.transaction() as t:
        rows = t.execute("""
            SELECT coalesce(max((SELECT count(*) FROM @schema@.queue_start b
                                 WHERE b.queue = a.queue AND b.started_at <= a.started_at
                                   AND b.started_at > a.started_at - $2::bigint * interval '1 millisecond')), 0)
            FROM @schema@.queue_start a WHERE a.queue = $1""", [queue, window // timedelta(milliseconds=1)])
    return int(str(rows[0][0]))


def check(db: payq.Database, books: Books, requested: Dict[str, Requested], providers: Dict[str, FakeProvider],
          repeat: Optional[Requested], replay: "Replay") -> Invariants:
    inv = Invariants()
    ledger = db.ledger
    answered: Counter[str] = Counter()  # by API
    charged: Counter[str] = Counter()  # points by user
    for request in REQUESTS:
        key, api = books.key(request), APIS[request.api]
        task = db.tasks.get(requested[request.number].task_id)
        hold = ledger.get_hold(requested[request.number].hold.id)
        state, hold_status = ("succeeded", "captured") if request.answered else ("dead", "released")
        provider = providers[request.api]
        applied = provider.applied_count(key)
        inv.check(task.state == state and hold.status == hold_status and applied == (1 if request.answered else 0),
                  f"{key} ({request.user}, {api.name}): {task.state}, points {hold_status}, provider billed "
                  f"{applied}x in {provider.request_count(key)} call(s)"
                  + (f"; answer {answer_of(task)}" if request.answered else f"; {request.story}"))
        if task.state == "succeeded":
            answered[api.name] += 1
            charged[request.user] += api.price_points
    for api in APIS.values():
        keys = {books.key(r) for r in REQUESTS if r.api == api.name}
        billed = sum(minor for k, minor in providers[api.name].applied.items() if k in keys)
        inv.check(billed == answered[api.name] * api.cost_minor,
                  f"{api.name}: the provider billed {Money(billed, CASH)} for {answered[api.name]} answered calls")
        spent = ledger.get_account(books.spent[api.name]).balance
        inv.check(spent == Money(answered[api.name] * api.price_points, POINTS),
                  f"{api.name}: users spent {spent} on {answered[api.name]} answers")
        busiest = busiest_window(db, books.queue(api), api.rate_window)
        inv.check(busiest <= api.rate_count_max,
                  f"{api.name}: at most {busiest} calls started in any {api.rate_window.total_seconds():g} s "
                  f"(limit {api.rate_count_max})")
    for purchase in PURCHASES:
        user = ledger.get_account(books.users[purchase.user])
        expected = Money(purchase.points - charged[purchase.user], POINTS)
        inv.check(user.balance == expected and user.held == Money(0, POINTS),
                  f"{purchase.user}: {user.balance} left of {purchase.points} bought, {user.held} held")
    issued = -ledger.get_account(books.issued).balance.minor
    in_hand = sum(ledger.get_account(a).balance.minor for a in (*books.users.values(), *books.spent.values()))
    inv.check(issued == in_hand == sum(p.points for p in PURCHASES),
              f"points conserved: {issued} issued == {in_hand} held by users and spent")
    first = requested[DUPLICATE]
    inv.check(repeat is not None and not repeat.created and repeat.task_id == first.task_id
              and repeat.hold.id == first.hold.id,
              f"{DUPLICATE} sent twice: one task, one hold (the second found them)")
    inv.check(requested.get(REFUSED.number) is None and not db.tasks.list(key=books.key(REFUSED)),
              f"{REFUSED.number}: refused for lack of points, nothing written")
    stored = answer_of(db.tasks.get(requested[ASKED_AGAIN].task_id))
    inv.check(replay.requested is not None and not replay.requested.created
              and replay.requested.task_id == requested[ASKED_AGAIN].task_id
              and replay.requested.hold.id == requested[ASKED_AGAIN].hold.id
              and replay.answer is not None and replay.answer == stored,
              f"{ASKED_AGAIN} asked again: no new task or hold; served the stored answer {replay.answer}")
    audit = ledger.audit()
    for violation in audit.violations:
        print(f"    audit: {violation}")
    inv.check(audit.ok, f"ledger audit clean ({audit.accounts_checked} accounts, {audit.entries_checked} entries)")
    return inv


# ---------------------------------------------------------------- the run


def run(db: payq.Database, run_id: str) -> int:
    if db.ledger.find_account("cash", CASH, namespace_of(run_id)) is not None:
        # That run's providers lived in its process and are gone: nothing to check against.
        print(f"run id {run_id!r} was used before on this schema; choose another", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        providers = {name: stack.enter_context(FakeProvider(seed=seed)) for seed, name in enumerate(APIS, 1)}
        for provider in providers.values():
            provider.fault_defaults("timeout_after_apply", delay_ms=LATE_ANSWER_MS)
            provider.fault_rates(**FAULT_RATES)
        print(f"[1/5] the POINTS currency, accounts, and a rate-limited queue per provider (run {run_id}) ...")
        books = open_books(db, run_id)
        for api in APIS.values():
            db.queues.configure(books.queue(api), rate=(api.rate_count_max, api.rate_window))
            print(f"    {api.name}: {api.price_points} points a call, costs {Money(api.cost_minor, CASH)}; "
                  f"queue {books.queue(api)} at most {api.rate_count_max} starts per "
                  f"{api.rate_window.total_seconds():g} s; provider {providers[api.name].url}")
        k4 = next(r for r in REQUESTS if r.number == "K-4")
        providers["kyc"].fault_next("error_code", count=CALL_ATTEMPT_COUNT_MAX, key=books.key(k4), code=QUOTA_CODE)

        print("[2/5] users buy points (cash in, points out: one transaction, two currencies) ...")
        for purchase in PURCHASES:
            buy_points(db, books, purchase)
            print(f"    {purchase.user}: {purchase.points} points for {purchase.price} {CASH}")

        print("[3/5] requests: a points hold and a call task each, in one transaction ...")
        requested: Dict[str, Requested] = {}
        repeat: Optional[Requested] = None
        for request in (*REQUESTS, REFUSED):
            r = request_api(db, books, request)
            if r is None:
                print(f"    {books.key(request)}: refused, {request.user} lacks the points")
                continue
            requested[request.number] = r
            if request.number == DUPLICATE:
                repeat = request_api(db, books, request)
                print(f"    {books.key(request)} sent twice: task {r.task_id}, then "
                      f"{'a new task' if repeat is None or repeat.created else 'found the same one'}")
        print(f"    {len(requested)} calls queued")

        print(f"[4/5] the C++ worker calls the providers (random faults: {FAULT_RATES}) ...")
        finished = call_apis(db, books, providers, len(requested))
        outcomes = Counter(a.outcome for r in requested.values() for a in db.tasks.attempts(r.task_id))
        print(f"    attempts: {dict(sorted(outcomes.items()))}; provider requests: "
              + ", ".join(f"{name} {p.requests_total}" for name, p in providers.items()))

        print(f"[5/5] {ASKED_AGAIN} asked again, then checking every invariant ...")
        replay = ask_again(db, books, next(r for r in REQUESTS if r.number == ASKED_AGAIN))
        print(f"    {books.key(replay.request)}: "
              + (f"answered {replay.answer} from the stored result" if replay.answer else "no stored answer"))
        inv = check(db, books, requested, providers, repeat, replay)
        inv.check(finished, "every request settled in time")
    return inv.exit_status("points conserved; each request charged at most once "
                           "and each provider billed once per answer")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return example_main("payq example: a paid third-party API resold for points",
                        "names this run's accounts, queues and keys (default: random)", run, argv)


if __name__ == "__main__":
    sys.exit(main())
