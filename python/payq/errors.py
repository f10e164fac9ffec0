"""Every exception payq raises. The C++ core raises the class of the same name.

``except payq.Error`` catches all of them; each subclass names one cause a
caller can act on. Bad input is rejected before anything is written, so
catching one of these never leaves a half-done operation behind.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "ConfigError",
    "DatabaseError",
    "TransientError",
    "ConnectionLost",
    "CommitUnknown",
    "MigrationError",
    "InvalidAmount",
    "UnknownCurrency",
    "CurrencyMismatch",
    "UnknownAccount",
    "AccountClosed",
    "InsufficientFunds",
    "LimitExceeded",
    "Unbalanced",
    "IdempotencyConflict",
    "InvalidState",
    "HoldInUse",
    "InvalidArgument",
    "UnknownTaskKind",
    "UnknownTask",
    "UnknownQueue",
    "LeaseLost",
    "ResourceExhausted",
    "EncryptionError",
    "KeyMissing",
    "DecryptionFailed",
]


class Error(Exception):
    """Root of every payq error."""


class ConfigError(Error):
    """Configuration or environment is wrong: malformed DSN, bad schema name,
    PostgreSQL binaries missing. Nothing was attempted against the database."""


class DatabaseError(Error):
    """The database refused or failed an operation.

    ``sqlstate`` is the five-character SQLSTATE the server sent, or None.
    """

    sqlstate: Optional[str] = None


class TransientError(DatabaseError):
    """Serialization failure or deadlock: the transaction was rolled back and
    can be run again from the start. payq retries these itself in the
    transactions it owns."""


class ConnectionLost(DatabaseError):
    """The connection to the server broke before the transaction committed:
    nothing of it was applied. payq re-runs its own units of work
    (``transact()``, the worker) and retries a transaction's first
    statement on a fresh connection by itself; a transaction you drive
    (``with db.transaction()``) raises this and may be run again from the
    start."""


class CommitUnknown(DatabaseError):
    """The connection broke while COMMIT was in flight: the transaction may or
    may not have been applied. Never retry blindly; look first (for example by
    idempotency key)."""


class MigrationError(Error):
    """An applied migration differs from the one this payq carries, or the
    database schema is newer than this payq."""


class InvalidAmount(Error, ValueError):
    """An amount that is not exact money: a float, NaN, too many decimals for
    the currency, zero or negative where a positive amount is needed, or
    beyond 64-bit minor units."""


class UnknownCurrency(Error, ValueError):
    """A currency code payq does not know (register custom ones first)."""


class CurrencyMismatch(Error, ValueError):
    """Accounts or amounts of different currencies were combined."""


class UnknownAccount(Error, LookupError):
    """No account with that id or (owner, namespace, currency)."""


class AccountClosed(Error):
    """The account is closed and takes no new postings."""


class InsufficientFunds(Error):
    """The available balance (balance - held, down to any overdraft floor) is
    smaller than the amount. Nothing was written; retrying later may succeed."""


class LimitExceeded(Error):
    """A per-transaction, daily-count or daily-amount limit would be exceeded.
    Nothing was written; retrying later may succeed."""


class Unbalanced(Error, ValueError):
    """The legs of a posting do not sum to zero per currency."""


class IdempotencyConflict(Error):
    """The idempotency key was already used for a different request."""


class InvalidState(Error):
    """Well formed, but not allowed in the current state (for example,
    capturing a hold that was already released)."""


class HoldInUse(InvalidState):
    """The hold is settled by a live task (``task_id``): only that task's
    settlement, or an operator's action on that task, may capture or release
    it, and no other task may be given it to settle. Nothing was written."""

    task_id: Optional[int] = None


class InvalidArgument(Error, ValueError):
    """A malformed argument that is not an amount (empty or oversized key,
    unknown rounding rule, negative limit, wrong type)."""


class UnknownTaskKind(Error, LookupError):
    """No handler is registered for the task kind."""


class UnknownTask(Error, LookupError):
    """No task with that id."""


class UnknownQueue(InvalidArgument, LookupError):
    """An operator action (pause, resume) names a queue that has neither
    settings nor tasks; nothing was created."""


class LeaseLost(Error):
    """The task is no longer running under this attempt's lease token: its
    lease expired and another worker took it over. The completion was not
    recorded; roll back the business transaction it was part of."""


class ResourceExhausted(Error):
    """The operating system refused a resource payq needs (a worker thread,
    for example). Whatever was started with it has been stopped."""


class EncryptionError(Error):
    """A task's encrypted payload, result or error cannot be made or read
    (see ``docs/encryption.md``); :class:`KeyMissing` and
    :class:`DecryptionFailed` say why."""


class KeyMissing(EncryptionError, LookupError):
    """The key a ciphertext names is not in the keyring, or there is no
    keyring (or no current key) to encrypt with. Nothing was written."""


class DecryptionFailed(EncryptionError):
    """A ciphertext does not authenticate: other key material under the same
    key id, an altered ciphertext, or one moved from another task, kind or
    field. Nothing of it is shown."""
