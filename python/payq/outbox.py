"""The outbox queue, from Python: enqueue work in the business transaction,
inspect and act on tasks, configure queues.

Enqueue on ``db`` (a transaction of its own), on ``t`` inside
``with db.transaction() as t:`` (the caller's transaction: if it rolls back,
the task never existed), or on the application's connection with
``payq.outbox.enqueue(conn, ...)``.

A task with ``settle=payq.Settle.capture(hold, into=account)`` captures the
hold when it succeeds and releases it when it finally fails; an ``unknown``
outcome (may have been applied) never touches it: the task is retried with
the same idempotency key and, when attempts run out, waits in
``needs_review`` for an operator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from payq import _args
from payq import tracing as _tracing
from payq._native import core
from payq.errors import Error, InvalidArgument
from payq.keyring import Keyring
from payq.ledger import Account, Hold, LedgerTransaction, _id, _timestamp
from payq.money import Money

__all__ = [
    "Settle",
    "TaskRequest",
    "EnqueueResult",
    "Task",
    "TaskSettlement",
    "Attempt",
    "Tasks",
    "Queues",
    "QueueInfo",
    "Action",
    "Cron",
    "enqueue",
    "enqueue_many",
    "TASK_STATES",
    "OUTCOMES",
    "ACTIONS",
    "ACTIONS_BY_STATE",
    "QUEUE_NAME_MAX",
]

Json = Any

# The words the core defines (cpp/include/payq/vocabulary.hpp), read from it
# so that no list here can drift from the C++ or the schema.
TASK_STATES: Tuple[str, ...] = tuple(core.TASK_STATES)
"""Every state a task can be in."""
OUTCOMES: Tuple[str, ...] = tuple(core.OUTCOMES)
"""What one attempt may report: ``success``, ``retry``, ``fail``, ``unknown``."""
ACTIONS: Tuple[str, ...] = tuple(core.ACTIONS)
"""The operator actions on a task: ``release``, ``retry``, ``cancel``, ``resolve``."""
ACTIONS_BY_STATE: Mapping[str, Tuple[str, ...]] = {state: tuple(a) for state, a in core.ACTIONS_BY_STATE.items()}
"""The actions each state allows. Two also look at the task: ``cancel``
only a task that never ran (``attempt == 0``); ``retry`` not a task whose
failure side already moved money (:attr:`TaskSettlement.failure_side_moves_money`)."""
QUEUE_NAME_MAX: int = core.QUEUE_NAME_MAX
"""A queue's name is 1 to this many of letters, digits and ``_ . : -``."""


def _ms(value: Optional[timedelta], what: str) -> Optional[int]:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise InvalidArgument(f"{what} is a datetime.timedelta")
    return value // timedelta(milliseconds=1)


def _json_text(value: Json, what: str) -> str:
    return _args.json_text(value, what, separators=(",", ":"))


def _kind(kind: Any, what: str = "kind") -> str:
    """A task kind an application may enqueue: text, not one of payq's own."""
    return _args.not_reserved(_args.text(kind, what), what)


def _queue(queue: Any, what: str = "queue") -> str:
    """A queue an application may enqueue into: text, not one of payq's own."""
    return _args.not_reserved(_args.text(queue, what), what)


def _int32(value: Any, what: str) -> int:
    return _args.integer(value, what, _args.INT32_MIN, _args.INT32_MAX)


@dataclass(frozen=True)
class Settle:
    """What happens in the ledger when a task settles. Build with the
    class methods; combine a hold capture with ``followup``."""

    hold_id: Optional[int] = None
    capture_account_id: Optional[int] = None
    reverse_transaction_id: Optional[int] = None
    followup: Optional[Dict[str, Any]] = None

    @classmethod
    def capture(cls, hold: Union[Hold, int], *, into: Union[Account, int],
                followup: Optional[Mapping[str, Any]] = None) -> "Settle":
        """Capture ``hold`` into ``into`` on success; release it on final failure."""
        return cls(hold_id=_id(hold, "hold"), capture_account_id=_id(into, "account"),
                   followup=dict(followup) if followup else None)

    @classmethod
    def reverse(cls, transaction: Union[LedgerTransaction, int],
                followup: Optional[Mapping[str, Any]] = None) -> "Settle":
        """Reverse ``transaction`` (a refund) on final failure."""
        return cls(reverse_transaction_id=_id(transaction, "transaction"),
                   followup=dict(followup) if followup else None)

    @classmethod
    def followup_only(cls, kind: str, payload: Json = None, queue: Optional[str] = None) -> "Settle":
        """Enqueue a follow-up task on final failure (a compensation)."""
        followup: Dict[str, Any] = {"kind": kind, "payload": payload if payload is not None else {}}
        if queue is not None:
            followup["queue"] = queue
        return cls(followup=followup)

    def _to_core(self) -> "core.Settlement":
        s = core.Settlement()
        s.hold_id = _args.integer_or_none(self.hold_id, "settle hold id")
        s.capture_account_id = _args.integer_or_none(self.capture_account_id, "settle account id")
        s.reverse_transaction_id = _args.integer_or_none(self.reverse_transaction_id, "settle transaction id")
        if self.followup is not None:
            if not isinstance(self.followup, Mapping):
                raise InvalidArgument("a follow-up is a mapping with at least a str 'kind'")
            _kind(self.followup.get("kind"), "follow-up kind")
            if self.followup.get("queue") is not None:
                _queue(self.followup["queue"], "follow-up queue")
        s.followup_json = None if self.followup is None else _json_text(self.followup, "followup")
        return s


@dataclass(frozen=True)
class TaskRequest:
    """One task to enqueue (see :func:`enqueue` for the fields)."""

    kind: str
    payload: Json = None
    queue: str = "default"
    priority: int = 0
    delay: Optional[timedelta] = None
    max_attempts: int = 10
    timeout: timedelta = timedelta(seconds=60)
    unique_key: Optional[str] = None
    partition_key: Optional[str] = None
    idempotency_key: Optional[str] = None
    amount: Optional[Money] = None
    held: bool = False
    settle: Optional[Settle] = None
    encrypt: Optional[bool] = None
    """Store the payload encrypted (docs/encryption.md). None: as the kind
    was registered (``@payq.handler(kind, encrypt=True)`` in this process
    encrypts every enqueue of it)."""
    keyring: Optional[Keyring] = None
    """The :class:`payq.Keyring` to encrypt with; default the environment's
    (``PAYQ_KEYS``/``PAYQ_KEYS_FILE``)."""

    def _to_core(self) -> "core.TaskSpec":
        spec = core.TaskSpec()
        spec.kind = _kind(self.kind)
        spec.payload_json = _json_text({} if self.payload is None else self.payload, "task payload")
        spec.queue = _queue(self.queue)
        spec.priority = _int32(self.priority, "priority")
        spec.delay_ms = _ms(self.delay, "delay") or 0
        spec.attempt_max = _int32(self.max_attempts, "max_attempts")
        spec.timeout_ms = _ms(self.timeout, "timeout") or 0
        spec.unique_key = _args.text_or_none(self.unique_key, "unique_key")
        spec.partition_key = _args.text_or_none(self.partition_key, "partition_key")
        spec.idempotency_key = _args.text_or_none(self.idempotency_key, "idempotency_key")
        if self.amount is not None:
            if not isinstance(self.amount, Money):
                raise InvalidArgument("a task amount is a payq.Money")
            spec.amount_minor = self.amount.minor
            spec.currency = self.amount.currency
        spec.held = _args.flag(self.held, "held")
        if self.settle is not None:
            if not isinstance(self.settle, Settle):
                raise InvalidArgument(f"settle must be a payq.Settle, not {type(self.settle).__name__}")
            spec.settlement = self.settle._to_core()
        self._encryption_to_core(spec)
        return spec

    def _encryption_to_core(self, spec: "core.TaskSpec") -> None:
        from payq import keyring as _keyring

        registered = spec.kind in _keyring.kinds_encrypted()
        if self.encrypt is None:
            encrypt = registered
        else:
            encrypt = _args.flag(self.encrypt, "encrypt")
            if not encrypt and registered:
                raise InvalidArgument(f"kind {spec.kind!r} is registered with encrypt=True: its payload is never "
                                      f"stored clear")
        if not encrypt:
            if self.keyring is not None:
                raise InvalidArgument("a keyring without encrypt=True encrypts nothing")
            return
        spec.encrypt = True
        spec.keyring = _keyring.keyring_for_enqueue(self.keyring, spec.kind)._core


@dataclass(frozen=True)
class EnqueueResult:
    """The task's id, and whether this call created it (False: its unique
    key already named an existing task)."""

    task_id: int
    created: bool


@dataclass(frozen=True)
class TaskSettlement:
    """What a task settles against the ledger: the hold it captures on
    success (into ``capture_account_id``) and releases on final failure, the
    transaction it reverses on final failure, the follow-up task it enqueues
    on final failure. All None: no settlement."""

    hold_id: Optional[int] = None
    capture_account_id: Optional[int] = None
    reverse_transaction_id: Optional[int] = None
    followup: Json = None

    @property
    def failure_side_moves_money(self) -> bool:
        """True if a final failure releases or reverses something: such a
        task cannot be sent again once it failed (enqueue a new one)."""
        return self.hold_id is not None or self.reverse_transaction_id is not None


@dataclass(frozen=True)
class Task:
    """A task as it was read."""

    id: int
    queue: str
    kind: str
    payload: Json
    state: str
    attempt: int
    max_attempts: int
    idempotency_key: str
    unique_key: Optional[str]
    partition_key: Optional[str]
    priority: int
    amount: Optional[Money]
    result: Json
    error: Optional[str]
    lease_token: Optional[int]
    worker_id: Optional[str]
    run_at: datetime
    created_at: datetime
    finished_at: Optional[datetime]
    settlement: TaskSettlement = field(default_factory=TaskSettlement)
    traceparent: Optional[str] = None
    """The W3C traceparent of the enqueuer's span (its trace id is the
    second field), when the task was enqueued inside a trace (docs/tracing.md)."""

    @classmethod
    def _from_core(cls, t: "core.Task") -> "Task":
        from payq.ledger import _money

        run_at = _timestamp(t.run_at)
        created = _timestamp(t.created_at)
        assert run_at is not None and created is not None
        return cls(
            id=t.id,
            queue=t.queue,
            kind=t.kind,
            payload=json.loads(t.payload_json),
            state=t.state,
            attempt=t.attempt,
            max_attempts=t.attempt_max,
            idempotency_key=t.idempotency_key,
            unique_key=t.unique_key,
            partition_key=t.partition_key,
            priority=t.priority,
            amount=None if t.amount_minor is None or t.currency is None else _money(t.amount_minor, t.currency),
            result=None if t.result_json is None else json.loads(t.result_json),
            error=t.error,
            lease_token=t.lease_token,
            worker_id=t.worker_id,
            run_at=run_at,
            created_at=created,
            finished_at=_timestamp(t.finished_at),
            settlement=TaskSettlement(
                hold_id=t.settlement.hold_id,
                capture_account_id=t.settlement.capture_account_id,
                reverse_transaction_id=t.settlement.reverse_transaction_id,
                followup=None if t.settlement.followup_json is None else json.loads(t.settlement.followup_json),
            ),
            traceparent=None if t.trace_context is None else t.trace_context.traceparent,
        )


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task: who ran it, how it ended, how long it took."""

    task_id: int
    attempt: int
    worker_id: str
    outcome: str
    error: Optional[str]
    duration_ms: int
    started_at: datetime
    finished_at: datetime
    traceback: Optional[str] = None
    """Where the handler raised, when it did: the stack trace's last 8 KiB."""

    @classmethod
    def _from_core(cls, a: "core.TaskAttempt") -> "Attempt":
        started = _timestamp(a.started_at)
        finished = _timestamp(a.finished_at)
        assert started is not None and finished is not None
        return cls(a.task_id, a.attempt, a.worker_id, a.outcome, a.error, a.duration_ms, started, finished,
                   getattr(a, "traceback", None))


@dataclass(frozen=True)
class QueueAction:
    """A recorded operator action on a queue: ``pause``, ``resume``,
    ``pause_for`` or ``configure``, who took it (``actor``), why (``note``)
    and what it set (``detail``: the pause's length or the limits)."""

    id: int
    queue: str
    action: str
    actor: str
    note: str
    detail: Dict[str, Any]
    created_at: datetime

    @classmethod
    def _from_core(cls, a: Any) -> "QueueAction":
        created = _timestamp(a.created_at)
        assert created is not None
        return cls(a.id, a.queue, a.action, a.actor, a.note, json.loads(a.detail_json), created)


@dataclass(frozen=True)
class Action:
    """A recorded action on a task: who (``actor``), what and why (``note``).
    Operators' actions and provider callbacks (actor ``callback:<provider>``)."""

    task_id: int
    action: str
    actor: str
    note: str
    created_at: datetime

    @classmethod
    def _from_core(cls, a: Any) -> "Action":
        created = _timestamp(a.created_at)
        assert created is not None
        return cls(a.task_id, a.action, a.actor, a.note, created)


@dataclass(frozen=True)
class Cron:
    """A cron entry (:meth:`Queues.cron`)."""

    name: str
    schedule: str
    time_zone: str
    queue: str
    kind: str
    payload: Json

    @classmethod
    def _from_core(cls, c: Any) -> "Cron":
        return cls(c.name, c.schedule, c.time_zone, c.queue, c.kind, json.loads(c.payload_json))


def _enqueue_many(target: Any, requests: Sequence[TaskRequest]) -> List[EnqueueResult]:
    specs = []
    for i, r in enumerate(requests):
        # A bad request of a batch is named by its index, as the core names
        # one it refuses; nothing is written.
        at = f"task {i} of the batch: " if len(requests) > 1 else ""
        if not isinstance(r, TaskRequest):
            raise InvalidArgument(f"{at}enqueue_many takes payq.TaskRequest items, not {type(r).__name__}")
        try:
            specs.append(r._to_core())
        except Error as exc:
            if not at:
                raise
            raise type(exc)(at + str(exc)) from exc
    # With OpenTelemetry: a payq.enqueue span, whose context the tasks carry.
    written = _tracing.enqueue_traced(specs, lambda: core.outbox_enqueue_batch(target, specs))
    return [EnqueueResult(r.task_id, r.created) for r in written]


def _request(kind: str, payload: Json, options: Mapping[str, Any]) -> TaskRequest:
    try:
        return TaskRequest(kind, payload, **options)
    except TypeError as exc:
        raise InvalidArgument(str(exc)) from exc


def _task_id(task_id: Any) -> int:
    return _args.integer(task_id, "task_id")


def _action_args(task_id: Any, actor: Any, note: Any, action: str) -> Tuple[int, str, str, str]:
    return _task_id(task_id), action, _args.text(actor, "actor"), _args.text(note, "note")


class Tasks:
    """Reading and acting on tasks (``db.tasks``)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def get(self, task_id: int) -> Task:
        """One task (raises :class:`payq.UnknownTask`)."""
        return Task._from_core(core.outbox_task_get(self._target, _task_id(task_id)))

    def list(self, *, state: Optional[str] = None, queue: Optional[str] = None, kind: Optional[str] = None,
             key: Optional[str] = None, older_than: Optional[timedelta] = None, after_id: int = 0,
             limit: int = 100) -> List[Task]:
        """A page of tasks by id (``after_id`` pages on), narrowed by every
        filter given: ``state``, ``queue``, ``kind``, ``key`` (the unique or
        idempotency key, exact) and ``older_than`` (created at least that
        long ago: stuck work)."""
        if state is not None and state not in TASK_STATES:
            raise InvalidArgument(f"unknown task state {state!r}; one of {', '.join(TASK_STATES)}")
        return [Task._from_core(t) for t in core.outbox_tasks_list(
            self._target, state=state, queue=_args.text_or_none(queue, "queue"), kind=_args.text_or_none(kind, "kind"),
            key=_args.text_or_none(key, "key"), created_before_ms_ago=_ms(older_than, "older_than"),
            after_id=_args.integer(after_id, "after_id"), limit=_args.integer(limit, "limit"))]

    def stats(self) -> Dict[str, Dict[str, int]]:
        """Task counts: ``{queue: {state: count}}``."""
        out: Dict[str, Dict[str, int]] = {}
        for queue, state, count in core.outbox_stats(self._target):
            out.setdefault(queue, {})[state] = count
        return out

    def attempts(self, task_id: int) -> List[Attempt]:
        """Every attempt of a task (kept when the task row is pruned)."""
        return [Attempt._from_core(a) for a in core.outbox_attempts(self._target, _task_id(task_id))]

    def actions(self, task_id: int) -> List[Action]:
        """Every recorded action on a task (release, retry, cancel, resolve,
        callbacks), oldest first."""
        return [Action._from_core(a) for a in core.outbox_actions(self._target, _task_id(task_id))]

    def release(self, task_id: int, *, actor: str, note: str = "") -> None:
        """Approve a held task: it becomes claimable. Recorded with ``actor``."""
        core.outbox_task_action(self._target, *_action_args(task_id, actor, note, "release"))

    def retry(self, task_id: int, *, actor: str, note: str = "") -> None:
        """Send a dead or cancelled task again (not one whose failure side
        already ran: enqueue a new task for that)."""
        core.outbox_task_action(self._target, *_action_args(task_id, actor, note, "retry"))

    def cancel(self, task_id: int, *, actor: str, note: str = "") -> None:
        """Cancel a task that never ran; its failure side runs (hold released)."""
        core.outbox_task_action(self._target, *_action_args(task_id, actor, note, "cancel"))

    def resolve(
        self,
        task_id: int,
        *,
        applied: bool,
        actor: str,
        note: str = "",
        capture_into: Optional[int] = None,
        settled_by_hand: bool = False,
    ) -> None:
        """Settle a ``needs_review`` task after checking with the provider:
        ``applied=True`` runs its success side, False its failure side.

        For a task whose settlement could not run (its error starts with
        ``settlement_failed``), an applied resolution can settle its hold
        another way: ``capture_into`` (an account id, say a suspense
        account) captures the hold there instead of the account named at
        enqueue; ``settled_by_hand=True`` releases the hold because the
        operator has recorded the money's movement in the ledger themselves,
        and needs a ``note`` saying how. Each is recorded as its own action.
        Raises :class:`payq.InvalidArgument` for a combination that does not
        apply (nothing is written)."""
        task_id, _, actor, note = _action_args(task_id, actor, note, "resolve")
        core.outbox_task_resolve(self._target, task_id, _args.flag(applied, "applied"), actor, note,
                                 _args.integer_or_none(capture_into, "capture_into"),
                                 _args.flag(settled_by_hand, "settled_by_hand"))


@dataclass(frozen=True)
class QueueInfo:
    """One queue as an operator sees it (:meth:`Queues.list`): settings,
    depth and lag. ``paused_until`` is set only while back-pressure from a
    provider is in force; ``oldest_runnable_age`` is how long the oldest
    due task has waited (None: nothing due)."""

    name: str
    paused: bool
    paused_until: Optional[datetime]
    concurrency: Optional[int]
    rate: Optional[Tuple[int, timedelta]]  # (count, window)
    amount: Optional[Tuple[Money, timedelta]]  # (money, window)
    weight: int
    pending: int
    runnable: int
    running: int
    held: int
    dead: int
    needs_review: int
    oldest_runnable_age: Optional[timedelta]
    started_last_minute: int

    @property
    def status(self) -> str:
        """``paused`` (by an operator), ``backoff`` (a provider's 429 / Retry-After) or ``active``."""
        return "paused" if self.paused else ("backoff" if self.paused_until is not None else "active")

    def limits_text(self) -> List[str]:
        """The queue's limits for people, e.g. ``["concurrency 4", "rate 10/1s"]``."""
        limits = []
        if self.concurrency is not None:
            limits.append(f"concurrency {self.concurrency}")
        if self.rate is not None:
            limits.append(f"rate {self.rate[0]}/{self.rate[1].total_seconds():g}s")
        if self.amount is not None:
            limits.append(f"amount {self.amount[0]}/{self.amount[1].total_seconds():g}s")
        if self.weight != 1:
            limits.append(f"weight {self.weight}")
        return limits

    @classmethod
    def _from_core(cls, q: Any) -> "QueueInfo":
        rate = None
        if q.rate_count_max is not None:
            rate = (q.rate_count_max, timedelta(milliseconds=q.rate_window_ms))
        amount = None
        if q.amount_max_minor is not None:
            amount = (Money(q.amount_max_minor, q.amount_currency), timedelta(milliseconds=q.amount_window_ms))
        age = q.oldest_runnable_age_ms
        return cls(
            name=q.name, paused=q.paused,
            paused_until=None if q.paused_until is None else _timestamp(q.paused_until),
            concurrency=q.concurrency_max, rate=rate, amount=amount, weight=q.weight,
            pending=q.pending, runnable=q.runnable, running=q.running, held=q.held, dead=q.dead,
            needs_review=q.needs_review,
            oldest_runnable_age=None if age is None else timedelta(milliseconds=max(0, age)),
            started_last_minute=q.started_last_minute,
        )


def _pair(value: Any, what: str, shape: str) -> Tuple[Any, Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidArgument(f"{what} is a pair {shape}")
    return value[0], value[1]


class Queues:
    """Queue settings (``db.queues``). Limits hold across every worker on
    every machine: the database coordinates them."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def list(self) -> List[QueueInfo]:
        """Every queue with its settings, depth and lag, by name."""
        return [QueueInfo._from_core(q) for q in core.outbox_queues_overview(self._target)]

    def get(self, name: str) -> QueueInfo:
        """One queue (raises :class:`payq.InvalidArgument` if it never existed)."""
        for info in self.list():
            if info.name == name:
                return info
        raise InvalidArgument(f"no queue named {name!r}")

    def configure(
        self,
        name: str,
        *,
        concurrency: Optional[int] = None,
        rate: Optional[Tuple[int, timedelta]] = None,
        amount: Optional[Tuple[Money, timedelta]] = None,
        weight: int = 1,
        actor: Optional[str] = None,
        note: str = "",
    ) -> None:
        """Set a queue's limits: ``concurrency`` running tasks at most;
        ``rate=(count, timedelta)`` starts per window; ``amount=(Money,
        timedelta)`` money started per window (counted from tasks' ``amount``);
        ``weight`` for workers serving several queues. Unset means unlimited.
        With an ``actor``, the change is recorded in the queue action log
        (:meth:`actions`) with ``note``."""
        rate_count = rate_window_ms = amount_minor = amount_window_ms = None
        amount_currency = None
        if rate is not None:
            rate_count, window = _pair(rate, "rate", "(count, timedelta)")
            rate_count = _int32(rate_count, "rate count")
            rate_window_ms = _ms(window, "rate window")
        if amount is not None:
            money, window = _pair(amount, "amount", "(payq.Money, timedelta)")
            if not isinstance(money, Money):
                raise InvalidArgument("an amount limit is (payq.Money, timedelta)")
            amount_minor, amount_currency = money.minor, money.currency
            amount_window_ms = _ms(window, "amount window")
        core.outbox_queue_configure(self._target, _args.text(name, "name"),
                                    concurrency_max=None if concurrency is None else _int32(concurrency, "concurrency"),
                                    rate_count_max=rate_count, rate_window_ms=rate_window_ms,
                                    amount_max_minor=amount_minor, amount_currency=amount_currency,
                                    amount_window_ms=amount_window_ms, weight=_int32(weight, "weight"),
                                    **_queue_action_by(actor, note))

    def cron(self, name: str, schedule: str, kind: str, payload: Json = None, *, queue: str = "default",
             time_zone: str = "UTC") -> None:
        """Add or replace a cron entry: ``schedule`` in 5-field cron syntax,
        read in ``time_zone``. Each slot enqueues exactly one task, however
        many workers run (the elected maintenance worker fires them)."""
        core.outbox_cron_set(self._target, _args.text(name, "name"), _args.text(schedule, "schedule"),
                             _args.text(time_zone, "time_zone"), _queue(queue), _kind(kind),
                             _json_text({} if payload is None else payload, "cron payload"))

    def crons(self) -> List[Cron]:
        """Every cron entry, by name."""
        return [Cron._from_core(c) for c in core.outbox_cron_list(self._target)]

    def cron_remove(self, name: str) -> None:
        """Remove a cron entry (no error if there is none)."""
        core.outbox_cron_remove(self._target, _args.text(name, "name"))

    def pause(self, name: str, *, actor: Optional[str] = None, note: str = "") -> None:
        """Stop workers from claiming this queue (running tasks finish).
        :class:`payq.UnknownQueue` for a queue without settings or tasks
        (nothing is created). With an ``actor``, recorded in the queue
        action log with ``note``."""
        core.outbox_queue_pause(self._target, _args.text(name, "name"), True, **_queue_action_by(actor, note))

    def resume(self, name: str, *, actor: Optional[str] = None, note: str = "") -> None:
        """Let workers claim this queue again (also ends a back-pressure
        pause); refused and recorded as :meth:`pause` is."""
        core.outbox_queue_pause(self._target, _args.text(name, "name"), False, **_queue_action_by(actor, note))

    def pause_for(self, name: str, duration: timedelta, *, actor: Optional[str] = None, note: str = "") -> None:
        """Back-pressure: no claims until ``duration`` from now (extends,
        never shortens); refused and recorded as :meth:`pause` is."""
        ms = _ms(duration, "duration")
        assert ms is not None
        core.outbox_queue_pause_until(self._target, _args.text(name, "name"), ms, **_queue_action_by(actor, note))

    def actions(self, name: Optional[str] = None, *, limit: int = 100) -> List[QueueAction]:
        """The queue action log, newest first: of queue ``name``, or of
        every queue; at most ``limit`` (1..1000) entries."""
        queue = None if name is None else _args.text(name, "name")
        return [QueueAction._from_core(a) for a in core.outbox_queue_actions(self._target, queue, limit)]


def _queue_action_by(actor: Optional[str], note: str) -> Dict[str, str]:
    """The ``actor``/``note`` keywords of a queue action (none: not recorded)."""
    if actor is None:
        if note:
            raise InvalidArgument("a note on a queue action needs an actor")
        return {}
    return {"actor": _args.text(actor, "actor"), "note": _args.text(note, "note") if note else ""}


def enqueue(connection: Any, kind: str, payload: Json = None, *, schema: str = "payq",
            **options: Any) -> EnqueueResult:
    """Enqueue in the application's own transaction (psycopg2, psycopg 3,
    Django, SQLAlchemy). Options as for :meth:`payq.Database.enqueue`."""
    from payq.appconn import app_executor

    return _enqueue_many(app_executor(connection, schema=schema), [_request(kind, payload, options)])[0]


def enqueue_many(connection: Any, requests: Iterable[TaskRequest], *, schema: str = "payq") -> List[EnqueueResult]:
    """Enqueue many tasks at once, in the application's transaction.

    Every request is checked first: a bad one raises its error naming its
    index (``task 3 of the batch: ...``) and nothing is written. A batch of
    ``TASK_BATCH_COPY_COUNT_MIN`` (32) or more without unique keys is
    written with the driver's COPY on psycopg 3 and psycopg2 (also under
    Django and SQLAlchemy), with the same results as the single statement
    other batches and drivers use."""
    from payq.appconn import app_executor

    return _enqueue_many(app_executor(connection, schema=schema), list(requests))
