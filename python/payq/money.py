"""Exact money: integer minor units, a currency, and named rounding.

An amount is a whole number of minor units (cents, yen, satoshi) of one
currency; the currency's *exponent* says how many of those make one major
unit (CNY 2, JPY 0, BTC 8). Amounts enter payq as

* ``int``: minor units, as stored (``1234`` CNY is 12.34 CNY);
* ``str`` or :class:`decimal.Decimal`: major units, converted exactly
  (``"12.34"`` CNY is 1234);
* :class:`Money` of the same currency.

A ``float`` is never accepted, and neither is an amount with more decimals
than the currency has, nor one beyond signed 64-bit minor units: each is a
:class:`payq.InvalidAmount`. The parsing and arithmetic run in payq's C++
core, so Python and C++ agree on every edge.
"""

from __future__ import annotations

from decimal import Decimal
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

from payq._native import core
from payq.errors import CurrencyMismatch, InvalidAmount, InvalidArgument, UnknownCurrency

__all__ = [
    "Money",
    "Fee",
    "Rounding",
    "Currency",
    "AmountLike",
    "to_minor",
    "currency_get",
    "currency_known",
    "currency_register",
]

AmountLike = Union[int, str, Decimal, "Money"]
"""What payq accepts as an amount: int minor units, str or Decimal major units, or Money."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# The widest exponent any currency may have, and the digits of INT64_MAX:
# together they bound the text a Decimal may become before C++ parses it.
_EXPONENT_MAX = 18
_INT64_DIGITS = 19


class Rounding(str, Enum):
    """How an inexact result becomes whole minor units.

    Each value is the rule's name in the C++ core and matches Python's
    ``decimal.ROUND_*`` rule of the same name:

    * ``down``: toward zero; ``up``: away from zero;
    * ``floor``: toward -infinity; ``ceiling``: toward +infinity;
    * ``half_up``: nearest, ties away from zero (2.5 -> 3, -2.5 -> -3);
    * ``half_down``: nearest, ties toward zero (2.5 -> 2, -2.5 -> -2);
    * ``half_even``: nearest, ties to the even neighbour (2.5 -> 2, 3.5 -> 4).
    """

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    HALF_DOWN = "half_down"
    DOWN = "down"
    UP = "up"
    FLOOR = "floor"
    CEILING = "ceiling"

    def __str__(self) -> str:
        return self.value


class Currency(NamedTuple):
    """A currency payq knows: its code and its exponent (minor-unit digits)."""

    code: str
    exponent: int


def _code_checked(code: Any) -> str:
    if not isinstance(code, str):
        raise InvalidArgument(f"a currency code is a str, not {type(code).__name__}")
    return code


def currency_get(code: str) -> Currency:
    """The currency with this exact, upper-case code.

    Raises :class:`payq.UnknownCurrency` for a code payq does not know.
    """
    code = _code_checked(code)
    if not code.isascii():
        raise UnknownCurrency(f"unknown currency {code[:13]!r}")
    found = core.currency_get(code)
    return Currency(found.code, found.exponent)


def currency_known(code: str) -> bool:
    """Whether payq knows this currency code (built in or registered)."""
    code = _code_checked(code)
    return code.isascii() and core.currency_known(code)


def currency_register(code: str, exponent: int) -> None:
    """Adds a custom currency (points, vouchers, a token).

    ``code`` is 3 to 12 characters of A-Z, 0-9 and ``_``; ``exponent`` is
    0..18. Registering a known code again with the same exponent does
    nothing, so every process may register at start-up; a different exponent
    raises :class:`payq.InvalidArgument`, since stored amounts would change
    meaning. Registrations last for the life of the process.
    """
    code = _code_checked(code)
    if not code.isascii():
        raise InvalidArgument(f"currency code must be ASCII A-Z, 0-9 and '_', got {code[:13]!r}")
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise InvalidArgument(f"currency exponent is an int, not {type(exponent).__name__}")
    core.currency_register(code, exponent)


def _decimal_text(value: Decimal) -> str:
    """The plain decimal text of a finite Decimal, kept short.

    ``format(value, 'f')`` is exact, but ``Decimal('1E-999999999')`` would
    print a billion digits. Trailing zeros are dropped first (exactly, no
    context involved); what still needs more than 18 decimals or 19 integer
    digits cannot be an int64 amount of any currency.
    """
    if not value.is_finite():
        raise InvalidAmount(f"{value} is not an amount")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, so not 'n', 'N' or 'F'
    coefficient = "".join(map(str, digits)).rstrip("0")
    if not coefficient:
        return "0"
    exponent += len(digits) - len(coefficient)
    if exponent < -_EXPONENT_MAX:
        raise InvalidAmount(f"{value} has more decimal places than any currency")
    if len(coefficient) + exponent > _INT64_DIGITS:
        raise InvalidAmount(f"{value} does not fit in 64-bit minor units")
    return format(Decimal((sign, tuple(map(int, coefficient)), exponent)), "f")


def to_minor(value: AmountLike, currency: str) -> int:
    """``value`` as an exact number of minor units of ``currency``.

    ``int`` is taken as minor units; ``str`` and ``Decimal`` as major units
    (``"12.34"``, ``Decimal("12.34")``), with the grammar ``[-]digits[.digits]``
    and no more decimals than the currency's exponent (extra trailing zeros are
    fine). A :class:`Money` must be in ``currency``.

    Raises :class:`payq.InvalidAmount` for a float, bool, NaN or infinity,
    too many decimals, malformed text or a value beyond signed 64-bit minor
    units; :class:`payq.UnknownCurrency` for an unknown currency;
    :class:`payq.CurrencyMismatch` for Money of another currency.
    """
    return _to_minor(value, currency, currency_get(currency).exponent)


def _to_minor(value: AmountLike, currency: str, exponent: int) -> int:
    if isinstance(value, bool):
        raise InvalidAmount("a bool is not an amount")
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidAmount(f"{value} minor units do not fit in 64 bits")
        return int(value)
    if isinstance(value, Money):
        if value.currency != currency:
            raise CurrencyMismatch(f"{value} is not in {currency}")
        return value.minor
    if isinstance(value, Decimal):
        return core.amount_parse(_decimal_text(value), exponent)
    if isinstance(value, str):
        if not value.isascii():
            raise InvalidAmount(f"not a decimal amount: {value[:48]!r}")
        return core.amount_parse(value, exponent)
    if isinstance(value, float):
        raise InvalidAmount(
            f"float {value!r} is not exact money; pass Decimal or str major units, or int minor units"
        )
    raise InvalidAmount(
        f"{type(value).__name__} is not an amount; pass int minor units, or Decimal or str major units"
    )


class Money:
    """An exact amount of one currency: ``minor`` units of ``currency``.

    ``Money(1234, "CNY")`` and ``Money("12.34", "CNY")`` are equal (see
    :func:`to_minor` for what the amount may be). Money is immutable and
    hashable; equality is by (minor, currency). ``+`` and ``-`` work only
    between Money of the same currency (:class:`payq.CurrencyMismatch`
    otherwise) and raise :class:`payq.InvalidAmount` on 64-bit overflow.
    There is deliberately no conversion to float.
    """

    __slots__ = ("minor", "currency", "_exponent")

    minor: int
    currency: str
    _exponent: int

    def __init__(self, amount: AmountLike, currency: str) -> None:
        exponent = currency_get(currency).exponent
        Money._fill(self, _to_minor(amount, currency, exponent), currency, exponent)

    @staticmethod
    def _fill(target: "Money", minor: int, currency: str, exponent: int) -> None:
        object.__setattr__(target, "minor", minor)
        object.__setattr__(target, "currency", currency)
        object.__setattr__(target, "_exponent", exponent)

    @classmethod
    def _of(cls, minor: int, currency: str, exponent: int) -> "Money":
        # For minor units the core just produced: already checked.
        money = cls.__new__(cls)
        Money._fill(money, minor, currency, exponent)
        return money

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Money is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Money is immutable")

    def __reduce__(self) -> Tuple[type, Tuple[int, str]]:
        return (Money, (self.minor, self.currency))

    @property
    def exponent(self) -> int:
        """Minor-unit digits of the currency (2 for CNY)."""
        return self._exponent

    @property
    def decimal(self) -> Decimal:
        """The amount in major units, exactly (``Decimal('12.34')``)."""
        # The string constructor is exact whatever the decimal context says.
        return Decimal(self._text())

    def _text(self) -> str:
        return core.amount_format(self.minor, self._exponent)

    def __str__(self) -> str:
        return f"{self._text()} {self.currency}"

    def __repr__(self) -> str:
        return f"Money({self._text()!r}, {self.currency!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        return (self.minor, self.currency) == (other.minor, other.currency)

    def __hash__(self) -> int:
        return hash((self.minor, self.currency))

    def _same_currency(self, other: "Money", operation: str) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot {operation} {self} and {other}")

    def _compare(self, other: object) -> Optional[Tuple[int, int]]:
        if not isinstance(other, Money):
            return None
        self._same_currency(other, "compare")
        return self.minor, other.minor

    def __lt__(self, other: object) -> bool:
        pair = self._compare(other)
        return NotImplemented if pair is None else pair[0] < pair[1]

    def __le__(self, other: object) -> bool:
        pair = self._compare(other)
        return NotImplemented if pair is None else pair[0] <= pair[1]

    def __gt__(self, other: object) -> bool:
        pair = self._compare(other)
        return NotImplemented if pair is None else pair[0] > pair[1]

    def __ge__(self, other: object) -> bool:
        pair = self._compare(other)
        return NotImplemented if pair is None else pair[0] >= pair[1]

    def __add__(self, other: object) -> "Money":
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return Money._of(core.amount_add(self.minor, other.minor), self.currency, self._exponent)

    def __sub__(self, other: object) -> "Money":
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return Money._of(core.amount_sub(self.minor, other.minor), self.currency, self._exponent)

    def __neg__(self) -> "Money":
        return Money._of(core.amount_neg(self.minor), self.currency, self._exponent)

    def split(self, weights: Sequence[int]) -> List["Money"]:
        """Splits this amount in proportion to ``weights`` (non-negative ints,
        not all zero) into parts that sum to exactly this amount.

        Rule "largest remainder": each part gets the floor of its share, and
        the units left over go one each to the parts with the largest
        remainders, ties to the earlier part. A negative amount splits as its
        magnitude, negated. ``Money(100, "CNY").split([1, 1, 1])`` is 34, 33
        and 33 fen.
        """
        parts = core.amount_split(self.minor, list(weights))
        return [Money._of(part, self.currency, self._exponent) for part in parts]


@dataclass(frozen=True)
class Fee:
    """A percentage-plus-fixed fee, clamped to optional bounds.

    ``fee = round(amount * bps / 10000, rounding) + fixed``, then raised to
    ``min`` and lowered to ``max``. ``fixed``, ``min`` and ``max`` are given
    like any amount (int minor units, str or Decimal major units) and are
    converted in the currency of each transfer, so one Fee serves every
    currency: ``Fee(bps=250, fixed="0.30")`` is 2.5% + 0.30 CNY on CNY and
    2.5% + 0.30 USD on USD (and an InvalidAmount on JPY, which has no
    decimals). ``bps`` is 0..10000; bounds and ``fixed`` are not negative.
    """

    bps: int = 0
    fixed: AmountLike = 0
    min: Optional[AmountLike] = None
    max: Optional[AmountLike] = None
    rounding: Union[Rounding, str] = Rounding.HALF_UP

    def __post_init__(self) -> None:
        if isinstance(self.bps, bool) or not isinstance(self.bps, int):
            raise InvalidArgument(f"fee bps is an int, not {type(self.bps).__name__}")
        try:
            rounding = Rounding(self.rounding)
        except ValueError:
            known = ", ".join(r.value for r in Rounding)
            raise InvalidArgument(f"unknown rounding rule {self.rounding!r}; known: {known}") from None
        object.__setattr__(self, "rounding", rounding)

    def to_core(self, currency: str) -> "core.Fee":
        """The C++ fee in minor units of ``currency``; raises
        :class:`payq.InvalidArgument` if the fee is malformed there."""
        return core.Fee(
            rate_bps=self.bps,
            fixed_minor=to_minor(self.fixed, currency),
            min_minor=None if self.min is None else to_minor(self.min, currency),
            max_minor=None if self.max is None else to_minor(self.max, currency),
            rounding=Rounding(self.rounding).value,
        )

    def compute(self, amount: Money) -> Money:
        """The fee on a positive ``amount``, in its currency."""
        if not isinstance(amount, Money):
            raise InvalidAmount(f"a fee is computed on Money, not {type(amount).__name__}")
        fee_minor = core.fee_compute(amount.minor, self.to_core(amount.currency))
        return Money._of(fee_minor, amount.currency, amount.exponent)
