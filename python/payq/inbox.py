"""The inbox: result callbacks from payment providers.

A provider calls back ("payout K was applied", "payout K failed") on its
own schedule, sometimes twice, sometimes before the worker heard its own
answer. :meth:`Inbox.receive` records each event once, keyed by the
provider's event id, and settles the task that carries key K in the same
transaction: a task still running is taken over (the worker's late
completion then changes nothing), an ``unknown`` attempt waiting to retry or
a task in ``needs_review`` becomes succeeded or dead, and the hold is
captured or released exactly once. A callback that contradicts a task
already settled the other way changes nothing and raises a ``payq.alert``.

Verification comes first, where the HTTP request is read:
:class:`CallbackReceiver` checks an HMAC-SHA256 signature over the raw body
(constant-time), parses the provider's JSON and answers with the HTTP status
a provider expects; mount its :meth:`~CallbackReceiver.handle` in a Django
or Flask view, or run :meth:`~CallbackReceiver.serve` for a stand-alone
endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from payq._native import core
from payq._serving import ServingThread
from payq.errors import Error, InvalidArgument

__all__ = ["CallbackResult", "Inbox", "CallbackReceiver", "verify_hmac_sha256", "EFFECTS"]

EFFECTS = ("settled_success", "settled_failure", "already_settled", "no_task", "conflict", "ignored", "duplicate")
_BODY_BYTES_MAX = 64 * 1024


@dataclass(frozen=True)
class CallbackResult:
    """What a callback did (see :data:`EFFECTS`) and to which task."""

    effect: str
    task_id: Optional[int]
    task_state: Optional[str]

    @property
    def duplicate(self) -> bool:
        """This event was received before; nothing was recorded or changed."""
        return self.effect == "duplicate"


class Inbox:
    """Provider callbacks (``db.inbox``, or ``t.inbox`` in a transaction)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def receive(self, *, provider: str, event_id: str, key: str, applied: bool,
                payload: Any = None) -> CallbackResult:
        """Record the event and settle the task whose idempotency key is
        ``key``: ``applied=True`` runs its success side, False its failure
        side. Idempotent per ``(provider, event_id)``. Raises
        :class:`payq.InvalidArgument` (nothing written) for an empty or
        over-long provider, event id or key."""
        try:
            payload_json = json.dumps({} if payload is None else payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"callback payload is not JSON-serialisable: {exc}") from exc
        effect, task_id, state = core.inbox_receive(self._target, provider, event_id, key, bool(applied),
                                                    payload_json)
        return CallbackResult(effect, task_id, state)

    def prune(self, older_than: timedelta, *, limit: int = 10_000) -> int:
        """Delete events received more than ``older_than`` ago (at most
        ``limit``); returns how many. Keep them longer than any provider
        re-sends notifications (weeks, not days)."""
        if not isinstance(older_than, timedelta):
            raise InvalidArgument("older_than is a datetime.timedelta")
        return int(core.inbox_prune(self._target, older_than // timedelta(milliseconds=1), limit))


def verify_hmac_sha256(body: bytes, signature: Optional[str], secret: str) -> bool:
    """True if ``signature`` is the hex HMAC-SHA256 of ``body`` under
    ``secret``; compared in constant time."""
    if not signature or not secret:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


@dataclass
class CallbackReceiver:
    """Verifies, parses and settles one provider's callbacks.

    The defaults fit payq's fake provider (``payq.testing.FakeProvider``):
    a JSON body ``{"event_id", "key", "status", ...}`` signed in the
    ``X-Signature`` header. ``status`` values in ``applied_values`` settle
    as applied, in ``failed_values`` as failed; any other status (an
    intermediate "PROCESSING") is acknowledged and not recorded, so the
    final notification still counts.

    Keep ``secret`` out of code: read it from the environment.
    """

    db: Any  # a payq.Database (each callback in a transaction of its own) or a payq Transaction
    provider: str
    secret: str
    signature_header: str = "X-Signature"
    event_id_field: str = "event_id"
    key_field: str = "key"
    status_field: str = "status"
    applied_values: FrozenSet[str] = frozenset({"SUCCESS"})
    failed_values: FrozenSet[str] = frozenset({"FAILED"})
    # Results by effect, for monitoring; guarded by _lock (handle() runs on many threads).
    counts: Dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise InvalidArgument("a callback receiver needs a secret to verify signatures")
        if not self.provider:
            raise InvalidArgument("a callback receiver needs a provider name")

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Tuple[int, Dict[str, Any]]:
        """Process one HTTP callback; returns (HTTP status, JSON answer).

        401 for a bad signature and 400 for a body that is not a callback
        (nothing written either way: a provider retries those); 200 once the
        event is recorded (also for duplicates, so the provider stops
        re-sending); 202 for an intermediate status."""
        signature = _header(headers, self.signature_header)
        if len(body) > _BODY_BYTES_MAX:
            return self._answer(413, "too_large")
        if not verify_hmac_sha256(body, signature, self.secret):
            return self._answer(401, "bad_signature")
        try:
            message = json.loads(body)
            event_id = str(message[self.event_id_field])
            key = str(message[self.key_field])
            status = str(message[self.status_field])
        except (ValueError, KeyError, TypeError):
            return self._answer(400, "not_a_callback")
        if status in self.applied_values:
            applied = True
        elif status in self.failed_values:
            applied = False
        else:
            return self._answer(202, "not_final")
        try:
            result = self.db.inbox.receive(provider=self.provider, event_id=event_id, key=key, applied=applied,
                                           payload=message)
        except InvalidArgument:
            return self._answer(400, "not_a_callback")
        return self._answer(200, result.effect, task_id=result.task_id)

    def _answer(self, status: int, effect: str, **extra: Any) -> Tuple[int, Dict[str, Any]]:
        with self._lock:
            self.counts[effect] = self.counts.get(effect, 0) + 1
        return status, {"effect": effect, **extra}

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> "CallbackServer":
        """A stand-alone HTTP endpoint (any path, POST) in a background
        thread; use as a context manager. ``.url`` is where to point the
        provider."""
        return CallbackServer(self, host, port)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


class CallbackServer:
    """Runs a :class:`CallbackReceiver` behind ``http.server`` (see
    :meth:`CallbackReceiver.serve`)."""

    def __init__(self, receiver: CallbackReceiver, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_class(receiver))
        self._server.daemon_threads = True
        self._serving = ServingThread(self._server, "payq-callbacks")

    @property
    def url(self) -> str:
        """The ``http://host:port/callbacks`` address to give the provider
        (any path is accepted)."""
        host, port = self._server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/callbacks"

    def __enter__(self) -> "CallbackServer":
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.stop()


def _handler_class(receiver: CallbackReceiver) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            if length > _BODY_BYTES_MAX:
                status, answer = 413, {"effect": "too_large"}
            else:
                body = self.rfile.read(length)
                try:
                    status, answer = receiver.handle(body, dict(self.headers.items()))
                except Error as exc:  # the database refused: the provider should retry later
                    status, answer = 503, {"effect": "unavailable", "error": type(exc).__name__}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
