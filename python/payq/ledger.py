"""The double-entry ledger, from Python.

Reach it as ``db.ledger`` (each call in a payq transaction of its own,
retried on serialization failure), as ``t.ledger`` inside
``with db.transaction() as t:`` (the caller's transaction, savepoints
included), or on the application's own connection with
``payq.ledger.on(conn)`` / ``payq.ledger.transfer(conn, ...)`` (psycopg2,
psycopg 3, Django, SQLAlchemy: the application commits).

Amounts are ``int`` minor units, or ``str``/``Decimal`` major units in the
account's currency (see :func:`payq.to_minor`); results carry
:class:`payq.Money`. Every write takes an idempotency ``key``: the same key
with the same request returns the original result (``replayed=True``) and
changes nothing; the same key with a different request raises
:class:`payq.IdempotencyConflict`. A request refused for a state-dependent
reason (insufficient funds, a limit) is not remembered and may be retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from payq import _args
from payq._native import core
from payq.errors import InvalidAmount, InvalidArgument, UnknownAccount
from payq.money import AmountLike, Fee, Money, currency_get, to_minor

__all__ = [
    "Account",
    "Entry",
    "LedgerTransaction",
    "Hold",
    "AuditViolation",
    "AuditReport",
    "Ledger",
    "on",
    "transfer",
    "post",
    "hold",
    "capture",
    "release",
    "reverse",
    "account",
    "get_account",
    "audit",
]

HISTORY_PAGE_SIZE_MAX = 1000


def _money(minor: int, currency: str) -> Money:
    return Money._of(minor, currency, currency_get(currency).exponent)


def _timestamp(text: Optional[str]) -> Optional[datetime]:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _metadata_text(metadata: Optional[Mapping[str, Any]]) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise InvalidArgument("metadata must be a mapping (a JSON object)")
    return _args.json_text(metadata, "metadata", sort_keys=True)


def _key(key: str) -> str:
    return _args.text(key, "key (the idempotency key)")


def _kind(kind: str) -> str:
    return _args.text(kind, "kind (the posting kind)")


@dataclass(frozen=True)
class Account:
    """An account and its balances at the time it was read.

    ``balance`` includes credits still pending on a deferred-credit account;
    ``available`` (what may be spent: journaled balance minus held) does not.
    """

    id: int
    owner: str
    namespace: str
    currency: str
    balance: Money
    held: Money
    available: Money
    pending: Money
    seq: int
    allow_negative: bool
    overdraft: Money
    deferred_credit: bool
    closed: bool

    @classmethod
    def _from_core(cls, a: "core.Account") -> "Account":
        c = a.currency
        return cls(
            id=a.id,
            owner=a.owner,
            namespace=a.namespace,
            currency=c,
            balance=_money(a.balance_minor + a.pending_minor, c),
            held=_money(a.held_minor, c),
            available=_money(a.balance_minor - a.held_minor, c),
            pending=_money(a.pending_minor, c),
            seq=a.seq,
            allow_negative=a.allow_negative,
            overdraft=_money(a.overdraft_minor, c),
            deferred_credit=a.deferred_credit,
            closed=a.closed,
        )


@dataclass(frozen=True)
class Entry:
    """One journal line: ``amount`` on ``account_id``, identified by
    (account_id, seq) once journaled. ``balance_before`` is
    ``balance_after - amount``. A credit still pending on a deferred-credit
    account has no ``seq``/``balance_after`` yet (``pending`` is True)."""

    transaction_id: int
    account_id: int
    amount: Money
    seq: Optional[int]
    balance_after: Optional[Money]
    created_at: datetime

    @property
    def pending(self) -> bool:
        """True while the entry is a deferred credit not yet journaled (no ``seq``)."""
        return self.seq is None

    @property
    def balance_before(self) -> Optional[Money]:
        """The account's balance just before this entry (``None`` while pending)."""
        return None if self.balance_after is None else self.balance_after - self.amount

    @classmethod
    def _from_core(cls, e: "core.Entry") -> "Entry":
        created = _timestamp(e.created_at)
        assert created is not None
        return cls(
            transaction_id=e.transaction_id,
            account_id=e.account_id,
            amount=_money(e.amount_minor, e.currency),
            seq=e.seq,
            balance_after=None if e.balance_after is None else _money(e.balance_after, e.currency),
            created_at=created,
        )


@dataclass(frozen=True)
class LedgerTransaction:
    """A journal transaction: its header and its entries (legs), in order."""

    id: int
    key: str
    kind: str
    metadata: Dict[str, Any]
    entries: Tuple[Entry, ...]
    created_at: datetime
    reverses_id: Optional[int] = None
    hold_id: Optional[int] = None
    reversed_minor: Optional[int] = None
    replayed: bool = False
    """True when the key was already done: this is the original result."""

    @classmethod
    def _from_core(cls, t: "core.LedgerTransaction") -> "LedgerTransaction":
        created = _timestamp(t.created_at)
        assert created is not None
        return cls(
            id=t.id,
            key=t.key,
            kind=t.kind,
            metadata=json.loads(t.metadata_json),
            entries=tuple(Entry._from_core(e) for e in t.entries),
            created_at=created,
            reverses_id=t.reverses_id,
            hold_id=t.hold_id,
            reversed_minor=t.reversed_minor,
            replayed=t.replayed,
        )


@dataclass(frozen=True)
class Hold:
    """Money reserved on an account: ``active`` until ``captured``,
    ``released`` or ``expired``. ``task_id`` names the task that settles
    it, once one was enqueued with ``settle=``: while that task is live the
    hold does not expire, and only the task's settlement (or an operator's
    action on the task) captures or releases it."""

    id: int
    key: str
    account_id: int
    amount: Money
    captured: Money
    status: str
    expires_at: Optional[datetime]
    metadata: Dict[str, Any]
    replayed: bool = False
    task_id: Optional[int] = None

    @classmethod
    def _from_core(cls, h: "core.Hold") -> "Hold":
        return cls(
            id=h.id,
            key=h.key,
            account_id=h.account_id,
            amount=_money(h.amount_minor, h.currency),
            captured=_money(h.captured_minor, h.currency),
            status=h.status,
            expires_at=_timestamp(h.expires_at),
            metadata=json.loads(h.metadata_json),
            replayed=h.replayed,
            task_id=h.task_id,
        )


@dataclass(frozen=True)
class AuditViolation:
    """One broken invariant: which check, about what, and the figures."""

    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


@dataclass(frozen=True)
class AuditReport:
    """The result of :meth:`Ledger.audit`; truthy when every check passed."""

    violations: Tuple[AuditViolation, ...]
    accounts_checked: int
    entries_checked: int

    @property
    def ok(self) -> bool:
        """True when no check found a violation."""
        return not self.violations

    def __bool__(self) -> bool:
        return self.ok


AccountRef = Union[Account, int]
HoldRef = Union[Hold, int]
TransactionRef = Union[LedgerTransaction, int]


def _id(ref: Union[Account, Hold, LedgerTransaction, int], what: str) -> int:
    if isinstance(ref, bool) or not isinstance(ref, (int, Account, Hold, LedgerTransaction)):
        raise InvalidArgument(f"{what} must be a payq {what} or its int id, not {type(ref).__name__}")
    return _args.integer(ref, f"{what} id") if isinstance(ref, int) else ref.id


def _legs(legs: Any) -> List[Tuple[Any, Any]]:
    if isinstance(legs, (str, bytes, Mapping)) or not isinstance(legs, Sequence):
        raise InvalidArgument(f"legs must be a list of (account, amount) pairs, not {type(legs).__name__}")
    for leg in legs:
        if isinstance(leg, (str, bytes)) or not isinstance(leg, Sequence) or len(leg) != 2:
            raise InvalidArgument("each of legs is an (account, amount) pair")
    return [(leg[0], leg[1]) for leg in legs]


class Ledger:
    """Ledger operations on one target: a payq Database (a transaction per
    call), a payq Transaction, or an application connection's executor."""

    def __init__(self, target: Any) -> None:
        self._target = target

    # ------------------------------------------------------------ accounts

    def account(
        self,
        owner: str,
        currency: str,
        namespace: str = "default",
        *,
        allow_negative: bool = False,
        overdraft: AmountLike = 0,
        deferred_credit: bool = False,
    ) -> Account:
        """Open the account (owner, namespace, currency), or get it if it
        exists (then the flags of the first open stay). This writes: to
        look an account up without creating it, use :meth:`get_account`
        or :meth:`find_account`.

        ``allow_negative`` is for system accounts (the outside world,
        provider clearing). ``overdraft`` lets a normal account go down to
        ``-overdraft``. ``deferred_credit`` is for hot accounts credited by
        many concurrent postings (fee income): their credits are journaled
        later by :meth:`fold_pending`, so postings never wait on them.
        """
        overdraft_minor = to_minor(overdraft, currency)
        return Account._from_core(
            core.ledger_account_open(
                self._target,
                _args.text(owner, "owner"),
                _args.text(currency, "currency"),
                _args.text(namespace, "namespace"),
                _args.flag(allow_negative, "allow_negative"),
                overdraft_minor,
                _args.flag(deferred_credit, "deferred_credit"),
            )
        )

    def get_account(self, account: Union[AccountRef, str], currency: Optional[str] = None,
                    namespace: str = "default") -> Account:
        """The account as it is now, read only: by id (or an :class:`Account`),
        or by owner and currency (and namespace)::

            ledger.get_account(42)
            ledger.get_account("user:42", "CNY")

        Never creates an account (unlike :meth:`account`): one that does not
        exist raises :class:`payq.UnknownAccount`; :meth:`find_account`
        returns None instead."""
        if isinstance(account, str):
            if currency is None:
                raise InvalidArgument("get_account(owner, currency): the currency is missing")
            found = self.find_account(account, currency, namespace)
            if found is None:
                raise UnknownAccount(f"no account of owner {account!r} in {currency} (namespace {namespace!r})")
            return found
        if currency is not None or namespace != "default":
            raise InvalidArgument("get_account(id) takes no currency or namespace; get_account(owner, currency) "
                                  "looks an account up by owner")
        return Account._from_core(core.ledger_account_get(self._target, _id(account, "account")))

    balance = get_account

    def find_account(self, owner: str, currency: str, namespace: str = "default") -> Optional[Account]:
        """The account (owner, namespace, currency), or None."""
        found = core.ledger_account_find(
            self._target, _args.text(owner, "owner"), _args.text(namespace, "namespace"),
            _args.text(currency, "currency"))
        return None if found is None else Account._from_core(found)

    def close_account(self, account: AccountRef) -> Account:
        """Close an account whose balance, held and pending are all zero."""
        return Account._from_core(core.ledger_account_close(self._target, _id(account, "account")))

    def define_currency(self, code: str, exponent: int) -> None:
        """Define a custom currency in this database (and this process)."""
        core.ledger_currency_define(self._target, _args.text(code, "code"),
                                    _args.integer(exponent, "exponent", _args.INT32_MIN, _args.INT32_MAX))

    def lock(self, *accounts: AccountRef) -> None:
        """Lock accounts in payq's canonical order. Call it first when one
        transaction runs several operations on overlapping accounts, so that
        two such transactions can never deadlock."""
        core.ledger_accounts_lock(self._target, [_id(a, "account") for a in accounts])

    # ------------------------------------------------------------ postings

    def _currency_of(self, account: AccountRef) -> str:
        return account.currency if isinstance(account, Account) else self.get_account(account).currency

    def _minor(self, amount: AmountLike, account: AccountRef) -> int:
        # int minor units need no currency; major units need the account's.
        if isinstance(amount, int) and not isinstance(amount, bool):
            return _int_minor(amount)
        return to_minor(amount, self._currency_of(account))

    def transfer(
        self,
        source: AccountRef,
        target: AccountRef,
        amount: AmountLike,
        *,
        key: str,
        fee: Optional[Fee] = None,
        fee_account: Optional[AccountRef] = None,
        fee_payer: str = "source",
        kind: str = "transfer",
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> LedgerTransaction:
        """Move ``amount`` from ``source`` to ``target``.

        With ``fee`` (a :class:`payq.Fee`: basis points + fixed part, rounding
        named, half-up by default) the fee goes to ``fee_account``; by default
        the source pays it on top (``fee_payer="source"``), or it comes out
        of what the target receives (``fee_payer="target"``). Outgoing money
        counts against the source's limits.
        """
        if fee_payer not in ("source", "target"):
            raise InvalidArgument("fee_payer is 'source' or 'target'")
        amount_minor = self._minor(amount, source)
        core_fee = None
        if fee is not None:
            if not isinstance(fee, Fee):
                raise InvalidArgument(f"fee must be a payq.Fee, not {type(fee).__name__}")
            core_fee = fee.to_core(self._currency_of(source))
        return LedgerTransaction._from_core(
            core.ledger_transfer(
                self._target,
                key=_key(key),
                source_id=_id(source, "account"),
                target_id=_id(target, "account"),
                amount_minor=amount_minor,
                fee=core_fee,
                fee_account_id=None if fee_account is None else _id(fee_account, "account"),
                fee_payer_target=fee_payer == "target",
                kind=_kind(kind),
                metadata=_metadata_text(metadata),
            )
        )

    def post(
        self,
        legs: Sequence[Tuple[AccountRef, AmountLike]],
        *,
        key: str,
        kind: str = "post",
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> LedgerTransaction:
        """Post any balanced set of legs ``[(account, signed amount), ...]``:
        per currency they must sum to zero (else :class:`payq.Unbalanced`)."""
        core_legs = [(_id(a, "account"), self._minor(amount, a)) for a, amount in _legs(legs)]
        return LedgerTransaction._from_core(
            core.ledger_post(self._target, _key(key), core_legs, _kind(kind), _metadata_text(metadata))
        )

    def hold(
        self,
        account: AccountRef,
        amount: AmountLike,
        *,
        key: str,
        expires_in: Optional[timedelta] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> Hold:
        """Reserve ``amount``: available drops, balance stays, until the hold
        is captured, released, or expires (``expires_in``; swept by
        :meth:`expire_holds`). Counts against the account's limits."""
        expires_in_ms = None
        if expires_in is not None:
            if not isinstance(expires_in, timedelta):
                raise InvalidArgument("expires_in is a datetime.timedelta")
            expires_in_ms = _args.integer(expires_in // timedelta(milliseconds=1), "expires_in (ms)")
        return Hold._from_core(
            core.ledger_hold(
                self._target,
                _key(key),
                _id(account, "account"),
                self._minor(amount, account),
                expires_in_ms,
                _metadata_text(metadata),
            )
        )

    def capture(
        self,
        hold: HoldRef,
        *,
        target: AccountRef,
        key: str,
        amount: Optional[AmountLike] = None,
        kind: str = "capture",
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> LedgerTransaction:
        """Capture a hold into ``target``: all of it, or ``amount`` of it, the
        remainder released."""
        amount_minor = None
        if amount is not None:
            amount_minor = self._minor(amount, target)
        return LedgerTransaction._from_core(
            core.ledger_capture(
                self._target,
                _key(key),
                _id(hold, "hold"),
                _id(target, "account"),
                amount_minor,
                _kind(kind),
                _metadata_text(metadata),
            )
        )

    def release(self, hold: HoldRef, *, key: str) -> Hold:
        """Release a hold: the money is available again."""
        return Hold._from_core(core.ledger_release(self._target, _key(key), _id(hold, "hold")))

    def reverse(
        self,
        transaction: TransactionRef,
        *,
        key: str,
        amount: Optional[AmountLike] = None,
        kind: str = "reversal",
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> LedgerTransaction:
        """Reverse (refund) a transaction: all that remains of it, or
        ``amount`` of its debit side, spread over its legs in proportion
        (largest-remainder rounding). Never more than remains reversible."""
        amount_minor = None
        if amount is not None:
            if isinstance(amount, int) and not isinstance(amount, bool):
                amount_minor = _int_minor(amount)
            else:
                original = (
                    transaction
                    if isinstance(transaction, LedgerTransaction)
                    else self.transaction(_id(transaction, "transaction"))
                )
                amount_minor = to_minor(amount, original.entries[0].amount.currency)
        return LedgerTransaction._from_core(
            core.ledger_reverse(
                self._target,
                _key(key),
                _id(transaction, "transaction"),
                amount_minor,
                _kind(kind),
                _metadata_text(metadata),
            )
        )

    # ------------------------------------------------------------ limits

    def set_limit(
        self,
        kind: str,
        value: AmountLike,
        *,
        account: Optional[AccountRef] = None,
        namespace: Optional[str] = None,
        currency: Optional[str] = None,
    ) -> None:
        """Limit outgoing money (transfers and holds) of one ``account``, or
        of each account in ``namespace`` + ``currency``. ``kind`` is
        ``per_transaction_max`` or ``daily_amount`` (``value`` an amount) or
        ``daily_count`` (``value`` a count). A "day" is a day in the
        installation's time zone (``installation.day_time_zone``, UTC by
        default); usage is counted from when a rule exists."""
        account_id = None if account is None else _id(account, "account")
        kind = _args.text(kind, "kind (the limit kind)")
        namespace = _args.text_or_none(namespace, "namespace")
        currency = _args.text_or_none(currency, "currency")
        if kind == "daily_count":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument("a daily_count limit is an int count")
            value_minor = _int_minor(value)
        elif account is not None:
            value_minor = self._minor(value, account)
        elif currency is not None:
            value_minor = to_minor(value, currency)
        else:
            raise InvalidArgument("a limit names an account, or a namespace and a currency")
        core.ledger_limit_set(self._target, account_id, namespace, currency, kind, value_minor)

    def remove_limit(
        self,
        kind: str,
        *,
        account: Optional[AccountRef] = None,
        namespace: Optional[str] = None,
        currency: Optional[str] = None,
    ) -> None:
        """Remove a limit set by :meth:`set_limit`."""
        account_id = None if account is None else _id(account, "account")
        core.ledger_limit_remove(self._target, account_id, _args.text_or_none(namespace, "namespace"),
                                 _args.text_or_none(currency, "currency"), _args.text(kind, "kind (the limit kind)"))

    # ------------------------------------------------------------ maintenance

    def expire_holds(self, limit: int = 1000) -> int:
        """Expire at most ``limit`` holds past their ``expires_at``; returns
        how many. The worker's maintenance runs this periodically."""
        return int(core.ledger_holds_expire(self._target, _args.integer(limit, "limit")))

    def fold_pending(self, account: AccountRef, limit: int = 10_000) -> int:
        """Journal up to ``limit`` pending credits of a deferred-credit
        account; returns how many were folded."""
        return int(core.ledger_pending_fold(self._target, _id(account, "account"), _args.integer(limit, "limit")))

    # ------------------------------------------------------------ queries

    def accounts(self, *, after_id: int = 0, limit: int = 100, owner: Optional[str] = None) -> List[Account]:
        """One page of accounts by id (``id > after_id``, at most ``limit``
        <= 1000), optionally of one owner."""
        return [Account._from_core(a) for a in core.ledger_accounts_list(
            self._target, _args.integer(after_id, "after_id"), _args.integer(limit, "limit"),
            _args.text_or_none(owner, "owner"))]

    def history(self, account: AccountRef, *, after_seq: int = 0, limit: int = 100) -> List[Entry]:
        """One page of an account's journal, by sequence number: entries
        with ``seq > after_seq``, at most ``limit`` (<= 1000)."""
        return [
            Entry._from_core(e)
            for e in core.ledger_history(self._target, _id(account, "account"), _args.integer(after_seq, "after_seq"),
                                         _args.integer(limit, "limit"))
        ]

    def iter_history(self, account: AccountRef, *, page_size: int = 500) -> Iterator[Entry]:
        """Every journal entry of an account, page by page."""
        after = 0
        while True:
            page = self.history(account, after_seq=after, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            last_seq = page[-1].seq
            assert last_seq is not None
            after = last_seq

    def transaction(self, transaction_id: int) -> LedgerTransaction:
        """A transaction with its entries, by id."""
        return LedgerTransaction._from_core(
            core.ledger_transaction_get(self._target, _id(transaction_id, "transaction")))

    def find_transaction(self, key: str) -> Optional[LedgerTransaction]:
        """The transaction recorded under an idempotency key, or None."""
        found = core.ledger_transaction_find(self._target, _key(key))
        return None if found is None else LedgerTransaction._from_core(found)

    def get_hold(self, hold_id: int) -> Hold:
        """A hold as it is now."""
        return Hold._from_core(core.ledger_hold_get(self._target, _id(hold_id, "hold")))

    def audit(self) -> AuditReport:
        """Check every invariant and report every violation: balance = sum of
        entries = last balance_after, sequences without gaps, each entry's
        balance_before + amount = balance_after, held = sum of active holds,
        each transaction and each currency sums to zero (pending credits
        included), no normal account below its floor, no reversal beyond its
        original."""
        report = core.ledger_audit(self._target)
        return AuditReport(
            violations=tuple(AuditViolation(v.check, v.subject, v.detail) for v in report.violations),
            accounts_checked=int(report.accounts_checked),
            entries_checked=int(report.entries_checked),
        )


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _int_minor(value: int) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidAmount(f"{value} minor units do not fit in 64 bits")
    return value


# ---------------------------------------------------------------- the application's connection


def on(connection: Any, *, schema: str = "payq") -> Ledger:
    """The ledger on an application's connection (psycopg2, psycopg 3,
    Django, SQLAlchemy): every operation joins the application's current
    transaction, and the application commits or rolls back."""
    from payq.appconn import app_executor

    return Ledger(app_executor(connection, schema=schema))


def transfer(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> LedgerTransaction:
    """:meth:`Ledger.transfer` in the application's transaction."""
    return on(connection, schema=schema).transfer(*args, **kwargs)


def post(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> LedgerTransaction:
    """:meth:`Ledger.post` in the application's transaction."""
    return on(connection, schema=schema).post(*args, **kwargs)


def hold(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> Hold:
    """:meth:`Ledger.hold` in the application's transaction."""
    return on(connection, schema=schema).hold(*args, **kwargs)


def capture(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> LedgerTransaction:
    """:meth:`Ledger.capture` in the application's transaction."""
    return on(connection, schema=schema).capture(*args, **kwargs)


def release(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> Hold:
    """:meth:`Ledger.release` in the application's transaction."""
    return on(connection, schema=schema).release(*args, **kwargs)


def reverse(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> LedgerTransaction:
    """:meth:`Ledger.reverse` in the application's transaction."""
    return on(connection, schema=schema).reverse(*args, **kwargs)


def account(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> Account:
    """:meth:`Ledger.account` in the application's transaction."""
    return on(connection, schema=schema).account(*args, **kwargs)


def get_account(connection: Any, *args: Any, schema: str = "payq", **kwargs: Any) -> Account:
    """:meth:`Ledger.get_account` in the application's transaction (read only)."""
    return on(connection, schema=schema).get_account(*args, **kwargs)


def audit(connection: Any, *, schema: str = "payq") -> AuditReport:
    """:meth:`Ledger.audit` on the application's connection."""
    return on(connection, schema=schema).audit()
