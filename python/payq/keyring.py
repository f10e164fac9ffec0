"""Keys for encrypted task payloads, results and errors at rest.

A task enqueued with ``encrypt=True`` stores its payload encrypted
(AES-256-GCM, by the C++ core, bound to the task's id and kind); a handler
registered with ``encrypt=True`` gets it decrypted and has its result and
error encrypted. See ``docs/encryption.md``::

    keys = payq.Keyring.from_env()          # PAYQ_KEYS=k1:<base64>,k2:<base64> PAYQ_KEY_CURRENT=k2
    db.enqueue("payout", {"iban": "..."}, encrypt=True, keyring=keys)

    @payq.handler("payout", encrypt=True)    # the worker's keyring: Worker(db, keyring=keys)
    def payout(task): ...

Key material stays inside the core: no repr, log line or error shows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from payq._native import core
from payq.errors import InvalidArgument, KeyMissing

__all__ = [
    "Keyring",
    "RotationReport",
    "ENCRYPTED",
    "rotate",
    "key_use",
    "task_encrypted",
    "task_decrypted",
    "attempt_decrypted",
    "kinds_encrypted",
]

ENCRYPTED = "encrypted"
"""How a list shows an encrypted payload it does not decrypt."""

KEY_BYTES = 32
_ENV_FILE = "PAYQ_KEYS_FILE"
_ENV_KEYS = "PAYQ_KEYS"

# Kinds registered with encrypt=True in this process (any Registry): an
# enqueue of such a kind is encrypted without being told.
_kinds_encrypted: Set[str] = set()


class Keyring:
    """AES-256 keys by id, one of them current (new encryptions use it);
    every key decrypts what was encrypted under it, so old keys keep
    working until they are removed.

    Build one from ``{"k1": key, "k2": key}`` (32 raw bytes or their
    base64) with ``current="k2"`` (optional with one key), or with
    :meth:`from_env` / :meth:`from_file`. Raises
    :class:`payq.InvalidArgument` for a malformed id or key; the message
    never shows a key.
    """

    __slots__ = ("_core",)

    def __init__(self, keys: Mapping[str, Union[bytes, str]], *, current: Optional[str] = None) -> None:
        if not isinstance(keys, Mapping):
            raise InvalidArgument("keys is a mapping of key id to key (32 bytes, or their base64)")
        ring = core.Keyring()
        for key_id, key in keys.items():
            if not isinstance(key_id, str):
                raise InvalidArgument("a key id is a str")
            if isinstance(key, (bytes, bytearray)):
                ring.add(key_id, bytes(key))
            elif isinstance(key, str):
                ring.add_base64(key_id, key.strip())
            else:
                raise InvalidArgument(f"key {key_id!r} is bytes or base64 text, not {type(key).__name__}")
        if current is None:
            if len(keys) != 1:
                raise InvalidArgument("several keys: name the current one (current=...)")
            current = next(iter(keys))
        if not isinstance(current, str):
            raise InvalidArgument("current is a key id (str)")
        ring.current_set(current)
        self._core = ring

    @classmethod
    def _wrap(cls, ring: Any) -> "Keyring":
        keyring = cls.__new__(cls)
        keyring._core = ring
        return keyring

    @classmethod
    def from_env(cls) -> "Keyring":
        """The keyring the environment names: ``PAYQ_KEYS_FILE`` (a key
        file, see :meth:`from_file`), else ``PAYQ_KEYS`` (``id:base64,...``)
        with ``PAYQ_KEY_CURRENT`` (optional with one key).
        :class:`payq.ConfigError` when none is set or it is malformed."""
        return cls._wrap(core.Keyring.from_env())

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "Keyring":
        """A key file: one ``id:base64`` per line, ``current=<id>``
        (optional with one key), blank lines and ``#`` comments skipped.
        Keep it readable by the service's user only (mode 0600).
        :class:`payq.ConfigError` if unreadable or malformed."""
        return cls._wrap(core.Keyring.file_read(os.fspath(path)))

    @staticmethod
    def generate_key() -> str:
        """A new random 256-bit key, base64 (what ``payq keys generate``
        prints)."""
        return str(core.Keyring.key_generate_base64())

    @property
    def ids(self) -> Tuple[str, ...]:
        """The key ids, in the order they were given."""
        return tuple(self._core.ids())

    @property
    def current(self) -> str:
        """The id of the key new encryptions use."""
        return str(self._core.current())

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, str) and bool(self._core.has(key_id))

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.ids)!r}, current={self.current!r})"

    def __reduce__(self) -> Any:
        # Pickling would write the keys somewhere they were never meant to go.
        raise TypeError("a payq.Keyring cannot be pickled")


def _env_configured() -> bool:
    return bool(os.environ.get(_ENV_FILE) or os.environ.get(_ENV_KEYS))


def keyring_for_enqueue(keyring: Optional[Keyring], kind: str) -> Keyring:
    """The keyring an ``encrypt=True`` enqueue uses: the one given, else the
    environment's. :class:`payq.KeyMissing` when there is none (nothing is
    written), :class:`payq.ConfigError` when the environment's is
    malformed."""
    if keyring is not None:
        if not isinstance(keyring, Keyring):
            raise InvalidArgument(f"keyring must be a payq.Keyring, not {type(keyring).__name__}")
        return keyring
    if not _env_configured():
        raise KeyMissing(f"task of kind {kind!r} is to be encrypted, but no keyring was given and neither "
                         f"{_ENV_FILE} nor {_ENV_KEYS} is set")
    return Keyring.from_env()


def kinds_encrypted() -> Tuple[str, ...]:
    """The kinds registered with ``encrypt=True`` in this process, sorted:
    their enqueues are encrypted without ``encrypt=True``."""
    return tuple(sorted(_kinds_encrypted))


def _kind_register(kind: str) -> None:
    _kinds_encrypted.add(kind)


def _kind_unregister(kind: str) -> None:
    _kinds_encrypted.discard(kind)


def _is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "payq_encrypted" in value


def _is_sealed_text(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("payq-encrypted:1:")


def task_encrypted(task: Any) -> bool:
    """Whether a :class:`payq.Task`'s payload, result or error is
    encrypted."""
    return _is_envelope(task.payload) or _is_envelope(task.result) or _is_sealed_text(task.error)


def _json_open(keyring: Keyring, field: str, task_id: int, kind: str, value: Any) -> Any:
    text = json.dumps(value, separators=(",", ":"))
    return json.loads(core.encryption_json_open(keyring._core, field, task_id, kind, text))


def task_decrypted(task: Any, keyring: Optional[Keyring]) -> Any:
    """The task with its payload, result and error decrypted (clear ones
    unchanged). :class:`payq.KeyMissing` without the key (or without a
    keyring, for an encrypted task), :class:`payq.DecryptionFailed` for a
    ciphertext that does not authenticate."""
    if not task_encrypted(task):
        return task
    if keyring is None:
        raise KeyMissing(f"task {task.id} is encrypted and no keyring was given (set {_ENV_KEYS} or "
                         f"{_ENV_FILE})")
    changes: Dict[str, Any] = {}
    if _is_envelope(task.payload):
        changes["payload"] = _json_open(keyring, "payload", task.id, task.kind, task.payload)
    if _is_envelope(task.result):
        changes["result"] = _json_open(keyring, "result", task.id, task.kind, task.result)
    if _is_sealed_text(task.error):
        changes["error"] = core.encryption_text_open(keyring._core, "error", task.id, task.kind, task.error)
    return dataclasses.replace(task, **changes)


def attempt_decrypted(attempt: Any, kind: str, keyring: Optional[Keyring]) -> Any:
    """An :class:`payq.Attempt` with its error and traceback decrypted
    (errors as for :func:`task_decrypted`)."""
    fields = {"error": attempt.error, "traceback": attempt.traceback}
    sealed = {name: value for name, value in fields.items() if _is_sealed_text(value)}
    if not sealed:
        return attempt
    if keyring is None:
        raise KeyMissing(f"the attempts of task {attempt.task_id} are encrypted and no keyring was given")
    return dataclasses.replace(attempt, **{
        name: core.encryption_text_open(keyring._core, name, attempt.task_id, kind, value)
        for name, value in sealed.items()})


def env_keyring_or_none() -> Optional[Keyring]:
    """The environment's keyring, or None when none is configured (a
    malformed one is still :class:`payq.ConfigError`)."""
    return Keyring.from_env() if _env_configured() else None


def sealed_key_id(task: Any) -> Optional[str]:
    """The key id of a task's encrypted payload; None for a clear one."""
    if not _is_envelope(task.payload):
        return None
    inner = task.payload["payq_encrypted"]
    return inner.get("key") if isinstance(inner, dict) else None


# A rotation's batches, at most (each moves past at least one task id).
_ROTATE_BATCHES_MAX = 1_000_000
# The most tasks one batch takes (reencrypt_batch_count_max in encryption.hpp).
ROTATE_BATCH_MAX = 10_000


@dataclasses.dataclass(frozen=True)
class RotationReport:
    """What :func:`rotate` did: tasks re-encrypted under the current key,
    tasks it could not read (a key missing or a ciphertext that does not
    authenticate; left as they were), the batches (transactions) it took,
    and the waiting tasks still on another key afterwards (claimed while
    the rotation passed, or unreadable): run it again for them."""

    current: str
    rotated: int
    unreadable: Tuple[int, ...]
    batches: int
    remaining: int


def rotate(db: Any, keyring: Keyring, *, batch: int = 500) -> RotationReport:
    """Re-encrypt the payload and error of every waiting task (held or
    pending, retrying ones included) under ``keyring``'s current key, in
    batches of ``batch`` tasks, each its own transaction. Rows a worker is
    claiming are skipped, never waited for (``FOR UPDATE SKIP LOCKED``), and
    running tasks are left alone; ``remaining`` counts what a later pass
    takes. Old keys stay readable: remove one only when ``payq keys status``
    shows no task on it."""
    from payq import _args

    if not isinstance(keyring, Keyring):
        raise InvalidArgument(f"keyring must be a payq.Keyring, not {type(keyring).__name__}")
    count = _args.integer(batch, "batch", 1, ROTATE_BATCH_MAX)
    after_id, rotated, batches = 0, 0, 0
    unreadable: List[int] = []
    while batches < _ROTATE_BATCHES_MAX:
        result = core.tasks_reencrypt(db._core, keyring._core, after_id, count)
        batches += 1
        rotated += result.rotated
        unreadable.extend(result.unreadable)
        after_id = result.last_id
        if result.done:
            break
    current = keyring.current
    remaining = sum(n for key_id, state, n in core.tasks_key_use(db._core)
                    if state in ("pending", "held") and key_id != current)
    return RotationReport(current, rotated, tuple(unreadable), batches, remaining)


def key_use(db: Any) -> List[Tuple[str, str, int]]:
    """``(key id, task state, count)`` for every task with an encrypted
    payload: a key is safe to remove when no task of a state that may
    still run (or be shown) uses it."""
    return [(str(k), str(s), int(n)) for k, s, n in core.tasks_key_use(db._core)]
