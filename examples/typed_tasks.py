"""Story 5: typed third-party tasks, retries, alerts and an operator.

A sign-up must send a welcome SMS and push the new contact to the CRM. Both
are paid third-party calls made after the sign-up commits, so they are
outbox tasks written in the sign-up's transaction.

- **Typed**: each task kind is a frozen dataclass naming its kind, queue
  and attempt budget; handlers receive the dataclass, not a dict
  (``TypedTasks`` below is a dozen lines over ``payq.handler``).
- **Unique keys**: the sign-up webhook arrives twice; the second delivery
  finds the tasks by their unique keys and enqueues nothing.
- **Queues per API**: the SMS queue has a rate limit, the CRM queue a
  concurrency of one; both hold across every worker.
- **Cron**: a nightly CRM sync at 03:00 Shanghai time, fired once per slot
  however many workers run.
- **Max retries and alerts**: the CRM is down; each push is tried three
  times and then goes ``dead``. A handler for ``payq.alert`` (payq enqueues
  one before the last attempt and one when a task dies) pages the operator.
  An SMS to a malformed number fails at once (``payq.Fail``): no retries.
- **The operator**: once the CRM is back, ``payq tasks list`` shows the
  dead pushes and ``payq tasks retry <id>`` sends each again (the real CLI,
  as a subprocess, on the same database and schema).

The SMS gateway and the CRM are simulated in this process; each remembers
requests by idempotency key, as real ones do, so the checks can prove
nothing was sent twice.

Run::

    python examples/typed_tasks.py                              # payq's embedded server
    python examples/typed_tasks.py --dsn "host=..." --schema app

The DSN defaults to ``PAYQ_DSN``, else payq's embedded server. Each run uses
unique keys of its own (``--run-id``). The worker also serves the
``payq.alerts`` queue, so it handles every alert waiting in that schema.
Exit status: 0 when every invariant holds, 1 when one is broken.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Set, Tuple, Type, TypeVar

import payq
from payq.worker import Registry, Worker
from example_support import WAIT_S_MAX, Invariants, example_main, wait_until

ALERT_QUEUE = "payq.alerts"


# ---------------------------------------------------------------- typed tasks


@dataclass(frozen=True)
class TaskPayload:
    """A task kind as a type: subclasses are frozen dataclasses whose fields
    are the payload."""

    KIND: ClassVar[str]
    QUEUE: ClassVar[str] = "default"
    MAX_ATTEMPTS: ClassVar[int] = 10

    @classmethod
    def from_payload(cls: Type[P], payload: Any) -> P:
        """The payload as this type; unknown fields are ignored, so older
        handlers accept newer payloads. A payload that does not fit is a
        permanent failure: no retry can make it fit."""
        if not isinstance(payload, dict):
            raise payq.Fail(f"{cls.__name__}: the payload is not an object")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in payload.items() if k in names})
        except TypeError as exc:
            raise payq.Fail(f"{cls.__name__}: malformed payload: {exc}") from exc


P = TypeVar("P", bound=TaskPayload)
R = TypeVar("R")


class TypedTasks:
    """Handlers and enqueues by payload type, over a payq registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def handler(self, payload_type: Type[P], **options: Any
                ) -> Callable[[Callable[[P, payq.TaskRun], R]], Callable[[P, payq.TaskRun], R]]:
        """Register ``function(payload, task)`` for ``payload_type.KIND``;
        ``options`` are those of ``payq.handler`` (backoff)."""

        def register(function: Callable[[P, payq.TaskRun], R]) -> Callable[[P, payq.TaskRun], R]:
            @self.registry.handler(payload_type.KIND, **options)
            def run(task: payq.TaskRun) -> R:
                return function(payload_type.from_payload(task.payload), task)

            return function

        return register

    @staticmethod
    def enqueue(t: payq.Transaction, payload: TaskPayload, **options: Any) -> payq.EnqueueResult:
        """Enqueue ``payload`` in ``t`` on its type's queue with its type's
        attempt budget; ``options`` as for ``Transaction.enqueue``."""
        options.setdefault("max_attempts", payload.MAX_ATTEMPTS)
        return t.enqueue(payload.KIND, dataclasses.asdict(payload), queue=payload.QUEUE, **options)


@dataclass(frozen=True)
class WelcomeSms(TaskPayload):
    KIND: ClassVar[str] = "sms.welcome"
    QUEUE: ClassVar[str] = "example.sms"
    MAX_ATTEMPTS: ClassVar[int] = 5

    user_id: str
    phone: str
    name: str


@dataclass(frozen=True)
class CrmContactPush(TaskPayload):
    KIND: ClassVar[str] = "crm.contact_push"
    QUEUE: ClassVar[str] = "example.crm"
    MAX_ATTEMPTS: ClassVar[int] = 3

    user_id: str
    email: str
    plan: str


@dataclass(frozen=True)
class CrmNightlySync(TaskPayload):
    KIND: ClassVar[str] = "crm.nightly_sync"
    QUEUE: ClassVar[str] = "example.crm"
    MAX_ATTEMPTS: ClassVar[int] = 3

    scope: str = "all"


@dataclass(frozen=True)
class Alert(TaskPayload):
    """The payload payq gives every ``payq.alert`` task."""

    KIND: ClassVar[str] = "payq.alert"
    QUEUE: ClassVar[str] = ALERT_QUEUE

    task_id: int
    kind: str
    queue: str
    state: str
    attempt: int
    attempt_max: int
    reason: str
    error: str = ""


# ---------------------------------------------------------------- the third parties (simulated)


class InvalidNumber(Exception):
    pass


class CrmUnavailable(Exception):
    pass


class SmsGateway:
    """Sends each message once per client reference (the idempotency key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Dict[str, str] = {}  # reference -> message id
        self.calls: Counter[str] = Counter()  # reference -> requests

    def send(self, reference: str, phone: str, text: str) -> str:
        with self._lock:
            self.calls[reference] += 1
            if not (phone.startswith("+") and phone[1:].isdigit() and len(phone) >= 8):
                raise InvalidNumber(f"{phone!r} is not an E.164 number")
            return self.sent.setdefault(reference, f"sms-{len(self.sent) + 1}")


class Crm:
    """Upserts contacts by request id; returns 503 during an outage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = True
        self.contacts: Dict[str, Dict[str, str]] = {}  # request id -> contact
        self.calls: Counter[str] = Counter()  # request id -> requests

    def upsert(self, request_id: str, contact: Dict[str, str]) -> None:
        with self._lock:
            self.calls[request_id] += 1
            if self.down:
                raise CrmUnavailable("CRM answered 503 Service Unavailable")
            self.contacts.setdefault(request_id, contact)


# ---------------------------------------------------------------- the application


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    phone: str
    email: str
    plan: str


class App:
    """Sign-ups and their third-party tasks for one run."""

    def __init__(self, db: payq.Database, run_id: str) -> None:
        self.db = db
        self.run_id = run_id
        self.sms = SmsGateway()
        self.crm = Crm()
        self._lock = threading.Lock()
        self.alerts: List[Alert] = []
        self.tasks = TypedTasks(Registry())
        self._register()

    def _register(self) -> None:
        fast = {"base_delay": timedelta(milliseconds=20), "max_delay": timedelta(milliseconds=200)}

        @self.tasks.handler(WelcomeSms, **fast)
        def welcome(sms: WelcomeSms, task: payq.TaskRun) -> Dict[str, str]:
            try:
                message_id = self.sms.send(task.idempotency_key, sms.phone, f"Welcome, {sms.name}!")
            except InvalidNumber as exc:
                raise payq.Fail(str(exc)) from exc  # never sent, and never will be
            return {"message_id": message_id}

        @self.tasks.handler(CrmContactPush, **fast)
        def push(contact: CrmContactPush, task: payq.TaskRun) -> Dict[str, str]:
            try:
                self.crm.upsert(task.idempotency_key, {"email": contact.email, "plan": contact.plan})
            except CrmUnavailable as exc:
                raise payq.Retry(str(exc)) from exc  # the CRM applied nothing: try again later
            return {"crm": "upserted"}

        @self.tasks.handler(CrmNightlySync)
        def nightly(sync: CrmNightlySync, task: payq.TaskRun) -> Dict[str, str]:
            return {"synced": sync.scope}

        @self.tasks.handler(Alert)
        def page(alert: Alert, task: payq.TaskRun) -> None:
            with self._lock:
                self.alerts.append(alert)
            what = "will be tried a last time" if alert.reason == "last_attempt_next" else f"is {alert.state}"
            print(f"    ALERT: task {alert.task_id} ({alert.kind}) {what} after attempt "
                  f"{alert.attempt}/{alert.attempt_max}: {alert.error}", flush=True)

    def key(self, *parts: str) -> str:
        return "/".join((self.run_id, *parts))

    def signup(self, t: payq.Transaction, user: User) -> List[payq.EnqueueResult]:
        """What a sign-up enqueues, in the sign-up's own transaction."""
        return [
            self.tasks.enqueue(t, WelcomeSms(user.user_id, user.phone, user.name),
                               unique_key=self.key("sms.welcome", user.user_id)),
            self.tasks.enqueue(t, CrmContactPush(user.user_id, user.email, user.plan),
                               unique_key=self.key("crm.contact", user.user_id)),
        ]

    def alerted(self) -> Set[Tuple[int, str]]:
        with self._lock:
            return {(a.task_id, a.reason) for a in self.alerts}


USERS = (
    User("u1", "Ada", "+8613800000001", "ada@example.com", "pro"),
    User("u2", "Ben", "+8613800000002", "ben@example.com", "free"),
    User("u3", "Cy", "12345", "cy@example.com", "free"),  # a malformed number
)


def payq_cli(db: payq.Database, *args: str) -> str:
    """Run the ``payq`` command line on this database and schema."""
    command = [sys.executable, "-m", "payq", "--dsn", db.dsn, "--schema", db.schema, *args]
    print(f"    $ payq {shlex.join(args)}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S_MAX)
    for line in done.stdout.splitlines():
        print(f"      {line}")
    if done.returncode != 0:
        raise RuntimeError(f"payq {shlex.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def run(db: payq.Database, run_id: str) -> int:
    app = App(db, run_id)
    inv = Invariants()
    print(f"[1/6] queues and the cron entry (run {run_id}) ...")
    db.queues.configure(WelcomeSms.QUEUE, rate=(20, timedelta(seconds=1)))
    db.queues.configure(CrmContactPush.QUEUE, concurrency=1)
    db.queues.cron("example.crm-nightly-sync", "0 3 * * *", CrmNightlySync.KIND, dataclasses.asdict(CrmNightlySync()),
                   queue=CrmNightlySync.QUEUE, time_zone="Asia/Shanghai")
    print(f"    {WelcomeSms.QUEUE}: at most 20 starts per second; {CrmContactPush.QUEUE}: one at a time; "
          "crm.nightly_sync at 03:00 Asia/Shanghai, once per night")

    print("[2/6] three sign-ups, each enqueuing its SMS and CRM push in its own transaction ...")
    sms_ids: Dict[str, int] = {}
    crm_ids: Dict[str, int] = {}
    for user in USERS:
        with db.transaction() as t:
            sms, crm = app.signup(t, user)
        sms_ids[user.user_id], crm_ids[user.user_id] = sms.task_id, crm.task_id
        print(f"    {user.name}: sms task {sms.task_id}, crm task {crm.task_id}")
    print("    the sign-up webhook for Ada arrives a second time ...")
    with db.transaction() as t:
        again = app.signup(t, USERS[0])
    print(f"    ... created {sum(r.created for r in again)} tasks; found {[r.task_id for r in again]}")
    inv.check(not any(r.created for r in again) and [r.task_id for r in again] == [sms_ids["u1"], crm_ids["u1"]],
              "a duplicate sign-up enqueues nothing (unique keys)")

    print("[3/6] a worker runs; the CRM is down ...")
    worker = Worker(db, queues=[WelcomeSms.QUEUE, CrmContactPush.QUEUE, ALERT_QUEUE], registry=app.tasks.registry,
                    concurrency=2, poll_interval=timedelta(milliseconds=100), log=False)
    worker.start()
    try:
        expected_alerts = {(crm_ids[u.user_id], reason) for u in USERS for reason in ("last_attempt_next", "dead")}
        expected_alerts.add((sms_ids["u3"], "dead"))
        finished = wait_until(lambda: all(db.tasks.get(i).state == "dead" for i in crm_ids.values())
                              and expected_alerts <= app.alerted(), "the CRM pushes to die and alert")

        print("[4/6] the CRM is back; the operator re-sends the dead pushes with the CLI ...")
        app.crm.down = False
        payq_cli(db, "tasks", "list", "--state", "dead", "--queue", CrmContactPush.QUEUE)
        for user in USERS:
            payq_cli(db, "tasks", "retry", str(crm_ids[user.user_id]), "--actor", "ops:lin",
                     "--note", "CRM outage over")
        finished = finished and wait_until(
            lambda: all(db.tasks.get(i).state == "succeeded" for i in crm_ids.values())
            and all(db.tasks.get(i).state in ("succeeded", "dead") for i in sms_ids.values()),
            "the re-sent pushes to succeed")
    finally:
        worker.stop()

    print("[5/6] what the third parties saw ...")
    print(f"    SMS sent: {len(app.sms.sent)} (requests {sum(app.sms.calls.values())}); "
          f"CRM contacts: {len(app.crm.contacts)} (requests {sum(app.crm.calls.values())})")

    print("[6/6] checking every invariant ...")
    inv.check(finished, "every task reached its final state")
    tasks = {i: db.tasks.get(i) for i in (*sms_ids.values(), *crm_ids.values())}
    sms_keys = {u.user_id: tasks[sms_ids[u.user_id]].idempotency_key for u in USERS}
    crm_keys = {u.user_id: tasks[crm_ids[u.user_id]].idempotency_key for u in USERS}
    inv.check(set(app.sms.sent) == {sms_keys["u1"], sms_keys["u2"]},
              "each valid welcome SMS was sent once; the malformed number never")
    cy = tasks[sms_ids["u3"]]
    inv.check(cy.state == "dead" and [a.outcome for a in db.tasks.attempts(cy.id)] == ["fail"],
              f"the SMS to a malformed number failed at once, no retries ({cy.error})")
    inv.check(set(app.crm.contacts) == set(crm_keys.values()), "each contact reached the CRM once")
    for user in USERS:
        outcomes = [a.outcome for a in db.tasks.attempts(crm_ids[user.user_id])]
        inv.check(outcomes == ["retry", "retry", "retry", "success"],
                  f"{user.name}'s push: {outcomes} (three tries, dead, re-sent, done)")
    missing = expected_alerts - app.alerted()
    inv.check(not missing, f"alerts before the last try and at death ({len(expected_alerts)} expected; "
                           f"missing {sorted(missing)})")
    return inv.exit_status("typed tasks ran once each; failures alerted; the operator's re-send went through")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return example_main("payq example: typed third-party tasks",
                        "prefix of this run's unique keys (default: random)", run, argv)


if __name__ == "__main__":
    sys.exit(main())
