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
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus
from types import TracebackType
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Type

from payq._native import core
from payq._serving import ServingLimits, WsgiServer
from payq.errors import Error, InvalidArgument

__all__ = ["CallbackResult", "Inbox", "CallbackReceiver", "verify_hmac_sha256", "EFFECTS"]

EFFECTS = ("settled_success", "settled_failure", "already_settled", "no_task", "conflict", "ignored", "duplicate")
_BODY_BYTES_MAX = 64 * 1024
# A callback is a flat record; nesting beyond this is not one (and would
# exhaust Python's recursion limit in json.loads or json.dumps).
_BODY_DEPTH_MAX = 64

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


class CallbackServer:
    """Runs a :class:`CallbackReceiver` behind waitress (see
    :meth:`CallbackReceiver.serve`).

    The HTTP layer refuses before any body is read: a Content-Length that
    is not one plain decimal number, or several of them (400), a body
    declared or sent chunked beyond 64 KiB (413); those refusals are
    counted in ``receiver.counts`` as ``bad_request`` and ``too_large``.
    The signature is verified on the raw body bytes as received."""

    def __init__(self, receiver: CallbackReceiver, host: str, port: int,
                 limits: Optional[ServingLimits] = None) -> None:
        self._server = WsgiServer(_wsgi_app(receiver), host=host, port=port, limits=limits, name="payq-callbacks",
                                  body_bytes_max=_BODY_BYTES_MAX,
                                  on_refused=lambda status: _count_refusal(receiver, status))

    @property
    def url(self) -> str:
        """The ``http://host:port/callbacks`` address to give the provider
        (any path is accepted)."""
        return self._server.url + "callbacks"

    def connection_count(self) -> int:
        """Connections open now."""
        return self._server.connection_count()

    def __enter__(self) -> "CallbackServer":
        self._server.start()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._server.stop()


def _count_refusal(receiver: CallbackReceiver, status: int) -> None:
    receiver._answer(status, "too_large" if status == 413 else "bad_request")


def _headers(environ: Mapping[str, Any]) -> Dict[str, str]:
    """The request's headers from a WSGI environ, named as sent
    (``HTTP_X_SIGNATURE``: ``X-Signature``)."""
    headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
               if key.startswith("HTTP_") and isinstance(value, str)}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    return headers


def _wsgi_app(receiver: CallbackReceiver) -> Callable[..., Iterable[bytes]]:
    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        extra: List[Tuple[str, str]] = []
        if environ.get("REQUEST_METHOD") != "POST":
            status, answer = 405, {"effect": "method_not_allowed"}
            extra.append(("Allow", "POST"))
        else:
            # waitress has read the whole body, within _BODY_BYTES_MAX, and
            # checked that it is as long as declared.
            length = int(environ.get("CONTENT_LENGTH") or 0)
            status, answer = _handled(receiver, environ["wsgi.input"].read(length), _headers(environ))
        data = json.dumps(answer).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
        return [data]

    return app


def _handled(receiver: CallbackReceiver, body: bytes, headers: Dict[str, str]) -> Tuple[int, Dict[str, Any]]:
    try:
        return receiver.handle(body, headers)
    except Error as exc:  # the database refused: the provider should retry later
        return 503, {"effect": "unavailable", "error": type(exc).__name__}
    except Exception:  # noqa: BLE001 - a bug still gets an answer, and a log line
        log.exception("handling a callback failed")
        return 500, {"effect": "internal_error"}
