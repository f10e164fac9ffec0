"""Encrypted tasks on the dashboard: a task page shows a task decrypted
with the keyring of the dashboard's environment (``PAYQ_KEYS`` or
``PAYQ_KEYS_FILE``); without the key (or with one that does not
authenticate) its encrypted fields read ``encrypted`` and the page says
why, while the task's state, timeline and actions stay usable. Lists never
decrypt: an encrypted error reads ``encrypted``."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

from payq import keyring as _keyring
from payq.errors import EncryptionError, KeyMissing

__all__ = ["task_for_page", "error_listed"]


def error_listed(error: Optional[str]) -> Optional[str]:
    """An error as a list shows it: ``encrypted`` for an encrypted one."""
    return _keyring.ENCRYPTED if _keyring._is_sealed_text(error) else error


def _masked(value: Any) -> Any:
    if _keyring._is_envelope(value) or _keyring._is_sealed_text(value):
        return _keyring.ENCRYPTED
    return value


def task_for_page(task: Any, attempts: Sequence[Any]) -> Tuple[Any, List[Any], Optional[str]]:
    """The task and its attempts as its page shows them, and why they could
    not be decrypted (the typed error's class and message), if so."""
    encrypted = _keyring.task_encrypted(task) or any(
        _keyring._is_sealed_text(a.error) or _keyring._is_sealed_text(a.traceback) for a in attempts)
    if not encrypted:
        return task, list(attempts), None
    try:
        keys = _keyring.env_keyring_or_none()
        if keys is None:
            raise KeyMissing("no keyring in the dashboard's environment (PAYQ_KEYS or PAYQ_KEYS_FILE)")
        return (_keyring.task_decrypted(task, keys),
                [_keyring.attempt_decrypted(a, task.kind, keys) for a in attempts], None)
    except EncryptionError as exc:
        shown = dataclasses.replace(task, payload=_masked(task.payload), result=_masked(task.result),
                                    error=_masked(task.error))
        shown_attempts = [dataclasses.replace(a, error=_masked(a.error), traceback=_masked(a.traceback))
                          for a in attempts]
        return shown, shown_attempts, f"This task is encrypted and cannot be shown here: {type(exc).__name__}: {exc}"
