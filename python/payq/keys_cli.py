"""``payq keys``: generate a key, show which keys tasks use, rotate waiting
tasks to the current key; and how the CLI shows encrypted tasks (decrypted
with the environment's keyring, ``"encrypted"`` in lists).

The keyring comes from the environment (``PAYQ_KEYS`` and
``PAYQ_KEY_CURRENT``, or ``PAYQ_KEYS_FILE``); see ``docs/encryption.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, List

from payq import keyring as _keyring
from payq.errors import KeyMissing

__all__ = ["argparse_add", "task_listed", "task_shown", "attempts_shown"]


def _listed_field(value: Any) -> Any:
    if _keyring._is_envelope(value) or _keyring._is_sealed_text(value):
        return _keyring.ENCRYPTED
    return value


def task_listed(task: Any) -> Any:
    """The task as a list shows it: each encrypted field as ``"encrypted"``
    (a list never decrypts, and never needs a key)."""
    if not _keyring.task_encrypted(task):
        return task
    return dataclasses.replace(task, payload=_listed_field(task.payload), result=_listed_field(task.result),
                               error=_listed_field(task.error))


def task_shown(task: Any) -> Any:
    """The task decrypted with the environment's keyring; KeyMissing (a
    typed refusal, exit 2) when it is encrypted and no key is at hand."""
    if not _keyring.task_encrypted(task):
        return task
    keys = _keyring.env_keyring_or_none()
    if keys is None:
        raise KeyMissing(f"task {task.id} is encrypted: set PAYQ_KEYS (and PAYQ_KEY_CURRENT) or PAYQ_KEYS_FILE "
                         f"to show it (`payq tasks list` shows it without its payload)")
    return _keyring.task_decrypted(task, keys)


def attempts_shown(attempts: List[Any], kind: str) -> List[Any]:
    """The attempts with their errors decrypted, as :func:`task_shown`."""
    if not any(_keyring._is_sealed_text(a.error) or _keyring._is_sealed_text(a.traceback) for a in attempts):
        return attempts
    keys = _keyring.env_keyring_or_none()
    if keys is None:
        raise KeyMissing("the attempts' errors are encrypted: set PAYQ_KEYS or PAYQ_KEYS_FILE to show them")
    return [_keyring.attempt_decrypted(a, kind, keys) for a in attempts]


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from payq import cli

    key = _keyring.Keyring.generate_key()
    cli._done(args, key, {"key": key})
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    from payq import cli

    db = cli._connect(args)
    keys = _keyring.env_keyring_or_none()
    uses = _keyring.key_use(db)
    if args.json:
        cli._json_out({"keyring": None if keys is None else {"ids": list(keys.ids), "current": keys.current},
                       "tasks": [{"key": k, "state": s, "count": n} for k, s, n in uses]})
        return 0
    cli._say("keyring: none in the environment" if keys is None else
             f"keyring: {', '.join(keys.ids)} (current {keys.current})")
    if not uses:
        cli._say("no task has an encrypted payload")
        return 0
    cli._table([("key", "<", None), ("state", "<", None), ("tasks", ">", None), ("in keyring", "<", None)],
               [[k, s, n, "-" if keys is None else ("yes" if k in keys else "NO")] for k, s, n in uses], args.wide)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from payq import cli

    keys = _keyring.env_keyring_or_none()
    if keys is None:
        raise KeyMissing("keys rotate needs the keyring: set PAYQ_KEYS and PAYQ_KEY_CURRENT (or PAYQ_KEYS_FILE)")
    db = cli._connect(args)
    report = _keyring.rotate(db, keys, batch=args.batch)
    answer: Dict[str, Any] = {"current": report.current, "rotated": report.rotated,
                              "unreadable": list(report.unreadable), "batches": report.batches,
                              "remaining": report.remaining}
    sentence = (f"re-encrypted {report.rotated} waiting task(s) under key {report.current} in {report.batches} "
                f"batch(es); {len(report.unreadable)} unreadable; {report.remaining} still on another key")
    if report.unreadable:
        shown = ", ".join(str(i) for i in report.unreadable[:20])
        sentence += f" (unreadable: {shown}{', ...' if len(report.unreadable) > 20 else ''})"
    cli._done(args, sentence, answer)
    return 0


def argparse_add(sub: Any) -> None:
    """Add ``payq keys`` to the CLI's subcommands."""
    keys = sub.add_parser("keys", help="encryption keys: generate one, tasks per key, rotate waiting tasks "
                                       "(keyring: PAYQ_KEYS + PAYQ_KEY_CURRENT, or PAYQ_KEYS_FILE)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="print a new random AES-256 key (base64) for the keyring")
    generate.set_defaults(handler=cmd_keys_generate)
    status = keys_sub.add_parser("status", help="tasks with an encrypted payload per key and state, and whether "
                                                "the environment's keyring holds each key")
    status.set_defaults(handler=cmd_keys_status)
    rotate = keys_sub.add_parser("rotate", help="re-encrypt waiting tasks (pending, held, retrying) under the "
                                                "current key, in batches; running ones are left for a later pass")
    rotate.add_argument("--batch", type=int, default=500,
                        help=f"tasks per transaction, 1 to {_keyring.ROTATE_BATCH_MAX} (default 500)")
    rotate.set_defaults(handler=cmd_keys_rotate)
