"""Checks on arguments before they cross into the C++ core.

pybind11 answers a value it cannot convert (``None`` for a ``str``, an int
beyond 64 bits, a lone surrogate, ``bytes``) with a bare ``TypeError`` that
names no argument. Each public entry point runs its arguments through these
first, so a caller gets :class:`payq.InvalidArgument` naming the argument.
What the core checks itself (bounds, control characters, positive ids) stays
there; these check only what the core cannot be handed at all.
"""

from __future__ import annotations

import json
import operator
from typing import Any, Optional

from payq.errors import InvalidArgument

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# Kinds and queues of this prefix are payq's own (payq.alert on payq.alerts):
# an application cannot enqueue them, so a handler of payq.alert only ever
# sees alerts payq raised.
RESERVED_PREFIX = "payq."


def text(value: Any, what: str) -> str:
    """``value`` if it is a str that UTF-8 can encode (no lone surrogate)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} is not valid text: a lone surrogate at position {exc.start}") from None
    return value


def text_or_none(value: Any, what: str) -> Optional[str]:
    """None, or :func:`text`."""
    return None if value is None else text(value, what)


def integer(value: Any, what: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """``value`` as an int in ``low..high`` (bool refused; any integer type
    with ``__index__``, such as numpy's, accepted)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an int, not bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{what} must be an int, not {type(value).__name__}") from None
    if not low <= number <= high:
        raise InvalidArgument(f"{what} must be between {low} and {high}, not {number}")
    return number


def integer_or_none(value: Any, what: str, low: int = INT64_MIN, high: int = INT64_MAX) -> Optional[int]:
    """None, or :func:`integer`."""
    return None if value is None else integer(value, what, low, high)


def flag(value: Any, what: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be True or False, not {type(value).__name__}")
    return value


def json_text(value: Any, what: str, **dumps: Any) -> str:
    """``value`` as JSON text. InvalidArgument for what JSON cannot hold (a
    set, NaN) and for nesting deeper than Python can write; the message does
    not repeat the value."""
    try:
        return json.dumps(value, allow_nan=False, **dumps)
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply to be written as JSON") from None
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from None


def not_reserved(name: str, what: str) -> str:
    """``name`` unless it starts with ``payq.``, which payq keeps for itself."""
    if name.startswith(RESERVED_PREFIX):
        raise InvalidArgument(f"{what} {name!r} is reserved: names starting with {RESERVED_PREFIX!r} are payq's own")
    return name
