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
import logging
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from payq._native import core
from payq._serving import BoundedThreadingMixIn, ServingLimits, ServingThread, bounded, listening
from payq.errors import Error, InvalidArgument

__all__ = ["CallbackResult", "Inbox", "CallbackReceiver", "verify_hmac_sha256", "EFFECTS"]

EFFECTS = ("settled_success", "settled_failure", "already_settled", "no_task", "conflict", "ignored", "duplicate")
_BODY_BYTES_MAX = 64 * 1024
# A callback is a flat record; nesting beyond this is not one (and would
# exhaust Python's recursion limit in json.loads or json.dumps).
_BODY_DEPTH_MAX = 64
# A Content-Length with more digits than this is refused unread.
_CONTENT_LENGTH_DIGITS_MAX = 20
# After refusing a body unread, what the client still sends is read and
# dropped, at most this much and with reads waiting at most this long, so
# that closing does not reset the connection before the answer arrives.
_DRAIN_BYTES_MAX = _BODY_BYTES_MAX + 1
_DRAIN_READ_TIMEOUT_S = 0.5

log = logging.getLogger("payq.inbox")


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
    given = signature.strip().lower()
    # compare_digest raises TypeError for a str with non-ASCII characters;
    # a header carrying one is simply not a hex signature.
    if not given.isascii():
        return False
    return hmac.compare_digest(expected, given)


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

        401 for a bad signature; 400 for a malformed request (a signature
        header that is not ASCII: ``bad_request``) or a body that is not a
        callback (not a JSON object, nested deeper than 64, a NUL character
        or a lone surrogate anywhere, missing fields: ``not_a_callback``).
        Nothing is written for either, and whatever a client sends is
        answered, never raised. 200 once the event is recorded (also for
        duplicates, so the provider stops re-sending); 202 for an
        intermediate status. Raises :class:`payq.InvalidArgument` only for a
        call that is wrong itself: ``body`` not bytes, ``headers`` without
        ``items()`` (a dict, Django's or Werkzeug's headers all have it), a
        signature header that is not a str."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"body must be the request's raw bytes, not {type(body).__name__}")
        if not callable(getattr(headers, "items", None)):  # Werkzeug's headers are no Mapping, but have items()
            raise InvalidArgument(f"headers must be a mapping of names to values, not {type(headers).__name__}")
        body = bytes(body)
        signature = _header(headers, self.signature_header)
        if signature is not None and not isinstance(signature, str):
            raise InvalidArgument(f"header {self.signature_header} must be a str, not {type(signature).__name__}")
        if len(body) > _BODY_BYTES_MAX:
            return self._answer(413, "too_large")
        if signature is not None and not signature.isascii():
            return self._answer(400, "bad_request")
        if not verify_hmac_sha256(body, signature, self.secret):
            return self._answer(401, "bad_signature")
        try:
            message = _callback_json(body)
            event_id = str(message[self.event_id_field])
            key = str(message[self.key_field])
            status = str(message[self.status_field])
        except (ValueError, KeyError, TypeError, RecursionError):
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

    def serve(self, host: str = "127.0.0.1", port: int = 0, *,
              limits: Optional[ServingLimits] = None) -> "CallbackServer":
        """A stand-alone HTTP endpoint (any path, POST) in a background
        thread; use as a context manager. ``.url`` is where to point the
        provider. ``limits``: how long a connection may last and how many
        are served at once (:class:`payq.ServingLimits`; its defaults when
        None)."""
        return CallbackServer(self, host, port, limits)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name.lower():
            return value
    return None


def _callback_json(body: bytes) -> Dict[str, Any]:
    """The body as a JSON object. ValueError when it is not one, nests
    deeper than _BODY_DEPTH_MAX, or holds a NUL character or a lone
    surrogate (``\\ud800``) anywhere: PostgreSQL cannot store either, so they
    are refused here, not by the database."""
    _check_depth(body)
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a callback is a JSON object")
    pending: List[Any] = [message]
    while pending:  # bounded by the body: each value is visited once
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("a callback holds a NUL character")
            value.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate ("\ud800")
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return message


def _check_depth(body: bytes) -> None:
    """ValueError when the JSON text nests brackets deeper than
    _BODY_DEPTH_MAX; checked on the text, before any parser recurses."""
    depth = 0
    in_string = False
    escaped = False
    for byte in body:  # bounded by _BODY_BYTES_MAX
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > _BODY_DEPTH_MAX:
                raise ValueError(f"a callback nests deeper than {_BODY_DEPTH_MAX}")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


class _CallbackHTTPServer(BoundedThreadingMixIn, HTTPServer):
    pass


class CallbackServer:
    """Runs a :class:`CallbackReceiver` behind ``http.server`` (see
    :meth:`CallbackReceiver.serve`)."""

    def __init__(self, receiver: CallbackReceiver, host: str, port: int,
                 limits: Optional[ServingLimits] = None) -> None:
        self._server = listening(lambda: _CallbackHTTPServer((host, port), _handler_class(receiver)), host, port)
        bounded(self._server, limits)
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


def _content_length(values: List[str]) -> Optional[int]:
    """The body's length from its Content-Length headers (none: 0); None
    when there are several, or it is not a plain decimal number (negative,
    signed, non-ASCII digits, absurdly long)."""
    if not values:
        return 0
    if len(values) > 1:
        return None
    text = values[0].strip()
    if not text or len(text) > _CONTENT_LENGTH_DIGITS_MAX or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _handler_class(receiver: CallbackReceiver) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            # Every refusal comes before the body is read, and a body is read
            # only up to the length it declared, which is within the bound.
            length = _content_length(self.headers.get_all("Content-Length") or [])
            if length is None or self.headers.get("Transfer-Encoding") is not None:
                self._refuse(*receiver._answer(400, "bad_request"))
                return
            if length > _BODY_BYTES_MAX:
                self._refuse(*receiver._answer(413, "too_large"))
                return
            body = self.rfile.read(length)
            if len(body) < length:  # the client stopped sending, or was timed out
                self.close_connection = True
                return
            self._send(*self._handled(body))

        def _send(self, status: int, answer: Dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, answer: Dict[str, Any]) -> None:
            """Answers without reading the body, then reads and drops a
            bounded amount of what the client still sends before closing."""
            self.close_connection = True
            self._send(status, answer)
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(_DRAIN_READ_TIMEOUT_S)
                dropped = 0
                while dropped < _DRAIN_BYTES_MAX:
                    chunk = self.connection.recv(min(16 * 1024, _DRAIN_BYTES_MAX - dropped))
                    if not chunk:
                        break
                    dropped += len(chunk)
            except OSError:
                pass

        def _handled(self, body: bytes) -> Tuple[int, Dict[str, Any]]:
            try:
                return receiver.handle(body, dict(self.headers.items()))
            except Error as exc:  # the database refused: the provider should retry later
                return 503, {"effect": "unavailable", "error": type(exc).__name__}
            except Exception:  # noqa: BLE001 - a bug still gets an answer, and a log line
                log.exception("handling a callback failed")
                return 500, {"effect": "internal_error"}

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
