"""A fake payout provider: a real HTTP server on loopback that behaves like a
payout API, faults included, for testing code that moves money through one.

::

    with FakeProvider() as provider:
        reply = post(provider.url + "/payouts", key="wd-1", account="alipay:1", amount_minor=500)
        provider.fault_next("timeout_after_apply", delay_ms=200)   # the money moves, the answer is late
        ...
        assert provider.applied_count("wd-1") <= 1                 # never paid twice

The provider applies each idempotency key at most once, remembers every
definite answer per key, and counts both the requests it received and the
payouts it applied, so a test can prove that the system under test never
paid twice however often it retried. The HTTP contract is described in
``docs/fake-provider.md``; payq's built-in C++ HTTP handler is tested against
it, so it only ever grows.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Deque, Dict, Iterable, List, Optional, Set, Tuple, Type

__all__ = ["FakeProvider", "CallbackFailure", "FAULT_KINDS"]

_log = logging.getLogger(__name__)

REQUEST_BYTES_MAX = 64 * 1024
CONNECTION_IDLE_TIMEOUT_S = 30.0
SERVE_POLL_S = 0.05
STOP_JOIN_S = 5.0
CALLBACK_ATTEMPT_COUNT_MAX = 3
CALLBACK_RETRY_DELAY_MS = 50
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_SHUFFLE_BUFFER_MAX = 4
CALLBACK_SHUFFLE_WAIT_MS = 200

# Every fault kind with its parameters and their defaults. A parameter not
# listed here is refused, so a typo cannot silently inject the wrong fault.
_FAULT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "error_500": {},
    "rate_limited": {"retry_after_s": 1},
    "slow": {"delay_ms": 1000},
    "timeout_after_apply": {"delay_ms": 5000},
    "drop_after_apply": {},
    "insufficient_funds": {},
    "bad_account": {},
    "error_code": {"code": "SYSTEM_ERROR", "record": False},
    "huge_body": {"size_bytes": 2 * 1024 * 1024},
}
FAULT_KINDS: Tuple[str, ...] = tuple(_FAULT_DEFAULTS)
"""The fault kinds :meth:`FakeProvider.fault_next` and
:meth:`FakeProvider.fault_rates` accept."""

Json = Dict[str, Any]


def _json_bytes(body: Json) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _hmac_hex(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- faults


@dataclass
class _Fault:
    kind: str
    params: Dict[str, Any]
    key: Optional[str]
    remaining: int


def _fault_params(kind: str, given: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Any]:
    if kind not in _FAULT_DEFAULTS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    unknown = set(given) - set(_FAULT_DEFAULTS[kind])
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter {', '.join(sorted(unknown))}")
    params = {**base, **given}
    for name, value in params.items():
        expected = type(_FAULT_DEFAULTS[kind][name])
        # bool is an int subclass: compare exact types so True is never a delay.
        if type(value) is not expected:
            raise ValueError(f"fault {kind!r}: {name} is a {expected.__name__}, not {type(value).__name__}")
        if expected is int and value < 0:
            raise ValueError(f"fault {kind!r}: {name} must not be negative")
        if expected is str and not value:
            raise ValueError(f"fault {kind!r}: {name} must not be empty")
    return params


class _FaultPlan:
    """Which faults the next POST /payouts requests meet: queued ones first
    (in order), then seeded random ones; plus the redirect switch."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._queued: List[_Fault] = []
        self._rates: List[Tuple[str, float]] = []
        self._defaults = {kind: dict(params) for kind, params in _FAULT_DEFAULTS.items()}
        self._random = random.Random(seed)
        self._redirect_url: Optional[str] = None

    def queue(self, kind: str, count: int, key: Optional[str], params: Dict[str, Any]) -> None:
        """Queue ``count`` faults of ``kind`` (for ``key`` only, if given),
        ``params`` over the kind's current defaults; raises ValueError for a
        bad kind, parameter or count."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count is an int >= 1")
        with self._lock:
            self._queued.append(_Fault(kind, _fault_params(kind, params, self._defaults.get(kind, {})), key, count))

    def set_rates(self, rates: Dict[str, float]) -> None:
        """Replace the random fault rates (kind: probability); raises
        ValueError unless each is 0..1 and they add up to at most 1."""
        for kind, probability in rates.items():
            _fault_params(kind, {}, {})
            if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                    or not 0.0 <= probability <= 1.0:
                raise ValueError(f"the rate of {kind!r} is a probability between 0 and 1")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        with self._lock:
            self._rates = [(kind, float(p)) for kind, p in rates.items() if p > 0]

    def set_defaults(self, kind: str, params: Dict[str, Any]) -> None:
        """Change ``kind``'s parameters for faults queued or drawn from now on
        (raises ValueError)."""
        with self._lock:
            self._defaults[kind] = _fault_params(kind, params, self._defaults.get(kind, {}))

    def clear(self) -> None:
        """Forget queued faults and random rates (defaults and the redirect stay)."""
        with self._lock:
            self._queued.clear()
            self._rates = []

    def take(self, key: str) -> Optional[_Fault]:
        """The fault this request meets, if any; queued faults are used up."""
        with self._lock:
            for fault in self._queued:
                if fault.key is None or fault.key == key:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._queued.remove(fault)
                    return _Fault(fault.kind, dict(fault.params), key, 1)
            if not self._rates:
                return None
            roll = self._random.random()
            for kind, probability in self._rates:
                if roll < probability:
                    return _Fault(kind, dict(self._defaults[kind]), key, 1)
                roll -= probability
            return None

    @property
    def redirect_url(self) -> Optional[str]:
        """Where every POST /payouts is redirected (307), or None."""
        with self._lock:
            return self._redirect_url

    @redirect_url.setter
    def redirect_url(self, url: Optional[str]) -> None:
        """Redirect every POST /payouts to ``url`` (None: stop)."""
        with self._lock:
            self._redirect_url = url


# ---------------------------------------------------------------- the provider's books


@dataclass(frozen=True)
class _PayoutRequest:
    account: str
    amount_minor: int
    currency: str

    @classmethod
    def parse(cls, raw: bytes) -> Optional["_PayoutRequest"]:
        """The payout in a JSON body, or None unless it has a non-empty
        ``account`` and ``currency`` and a positive int ``amount_minor``."""
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        account, amount, currency = body.get("account"), body.get("amount_minor"), body.get("currency")
        if not isinstance(account, str) or not account or not isinstance(currency, str) or not currency:
            return None
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return None
        return cls(account, amount, currency)


@dataclass(frozen=True)
class _Record:
    """A definite answer for one key: what was asked, what was answered
    (stored, so a retry gets the very same answer) and its callback event."""

    request: _PayoutRequest
    body: Json
    event: Json


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Json
    new_event: Optional[Json] = None
    """The callback event of an answer recorded just now."""


class _Book:
    """The provider's money and memory: balance, answers per key, counters."""

    def __init__(self, balance_minor: int) -> None:
        self._lock = threading.Lock()
        self._balance_minor = balance_minor
        self._records: Dict[str, _Record] = {}
        self._applied: Dict[str, int] = {}
        self._applied_count: "Counter[str]" = Counter()
        self._request_count: "Counter[str]" = Counter()
        self._requests_total = 0
        self._payout_ids = itertools.count(1)
        self._event_ids = itertools.count(1)

    def count_request(self, payout_key: Optional[str]) -> None:
        """Count one HTTP request, and one for ``payout_key`` if given (the
        idempotency key of a POST /payouts)."""
        with self._lock:
            self._requests_total += 1
            if payout_key is not None:
                self._request_count[payout_key] += 1

    def submit(self, key: str, request: _PayoutRequest, forced: Optional[Tuple[str, bool]]) -> _Answer:
        """Apply or refuse a payout once per key. ``forced`` is a failure
        code a fault imposes, and whether it is recorded as definite."""
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                if record.request != request:
                    return _Answer(409, {"return_code": "IDEMPOTENCY_MISMATCH", "key": key})
                return _Answer(200, record.body)
            if forced is not None and not forced[1]:
                # A transient provider error: nothing applied, nothing remembered.
                return _Answer(200, self._failed_body(key, request, forced[0]))
            code = forced[0] if forced is not None else self._refusal(request)
            if code is None:
                self._balance_minor -= request.amount_minor
                self._applied[key] = request.amount_minor
                self._applied_count[key] += 1
                body: Json = {"status": "SUCCESS", "return_code": "SUCCESS", "payout_id": f"po_{next(self._payout_ids)}",
                              "key": key, "amount_minor": request.amount_minor, "currency": request.currency}
            else:
                body = self._failed_body(key, request, code)
            event = {"event_id": f"evt_{next(self._event_ids)}", "key": key, "status": body["status"],
                     "return_code": body["return_code"], "amount_minor": request.amount_minor,
                     "currency": request.currency}
            self._records[key] = _Record(request, body, event)
            return _Answer(200, body, event)

    def _refusal(self, request: _PayoutRequest) -> Optional[str]:
        if request.account.startswith("bad:"):
            return "ACCOUNT_INVALID"
        if request.amount_minor > self._balance_minor:
            return "NOTENOUGH"
        return None

    @staticmethod
    def _failed_body(key: str, request: _PayoutRequest, code: str) -> Json:
        return {"status": "FAILED", "return_code": code, "key": key, "amount_minor": request.amount_minor,
                "currency": request.currency}

    def answer(self, key: str) -> Optional[Json]:
        """A copy of ``key``'s definite answer, or None."""
        with self._lock:
            record = self._records.get(key)
            return None if record is None else dict(record.body)

    def event(self, key: str) -> Optional[Json]:
        """A copy of the callback event of ``key``'s definite answer, or None."""
        with self._lock:
            record = self._records.get(key)
            return None if record is None else dict(record.event)

    @property
    def balance_minor(self) -> int:
        """The provider's remaining funds, in minor units."""
        with self._lock:
            return self._balance_minor

    def applied_count(self, key: str) -> int:
        """How many times money moved for ``key`` (0 or 1)."""
        with self._lock:
            return self._applied_count[key]

    def request_count(self, key: str) -> int:
        """How many POST /payouts requests carried idempotency key ``key``."""
        with self._lock:
            return self._request_count[key]

    def applied(self) -> Dict[str, int]:
        """A snapshot: the amount applied per key, in minor units."""
        with self._lock:
            return dict(self._applied)

    @property
    def requests_total(self) -> int:
        """Every HTTP request counted so far, on any path."""
        with self._lock:
            return self._requests_total


# ---------------------------------------------------------------- callbacks


@dataclass(frozen=True)
class CallbackFailure:
    """A result notification the provider gave up delivering."""

    event_id: str
    key: str
    attempts: int
    error: str


@dataclass(frozen=True)
class _Delivery:
    event: Json
    due: float
    """``time.monotonic()`` before which it is not sent."""
    forge: bool


class _Callbacks:
    """Sends result notifications from one background thread, in the
    configured (mis)order, retrying a few times before giving up."""

    def __init__(self, url: Optional[str], secret: str, seed: int, stopping: threading.Event) -> None:
        self._cond = threading.Condition()
        self._url = url
        self._secret = secret
        self._stopping = stopping
        self._random = random.Random(seed)
        self._duplicate = 1
        self._delay_ms = 0
        self._shuffle = False
        self._forge = False
        self._queue: Deque[_Delivery] = deque()
        self._pending = 0
        self._draining = 0  # drain() calls waiting: shuffle buffers are flushed for them
        self._stopped = False
        self.sent = 0
        self.delivered = 0
        self.failed: List[CallbackFailure] = []
        # Loopback needs no proxy, whatever http_proxy says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._run, name="fake-provider-callbacks", daemon=True)

    @property
    def url(self) -> Optional[str]:
        """Where notifications are POSTed (None: nowhere)."""
        with self._cond:
            return self._url

    @url.setter
    def url(self, url: Optional[str]) -> None:
        """Change where notifications go, queued ones included (None: nowhere)."""
        with self._cond:
            self._url = url

    def configure(self, duplicate: int, delay_ms: int, shuffle: bool, forge: bool) -> None:
        """Set how later notifications misbehave (see
        :meth:`FakeProvider.callback_mode`); raises ValueError for a bad
        ``duplicate`` or ``delay_ms``."""
        if isinstance(duplicate, bool) or not isinstance(duplicate, int) or duplicate < 1:
            raise ValueError("duplicate is an int >= 1")
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms < 0:
            raise ValueError("delay_ms is an int >= 0")
        with self._cond:
            self._duplicate, self._delay_ms = duplicate, delay_ms
            self._shuffle, self._forge = bool(shuffle), bool(forge)

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sending (waiting up to ``STOP_JOIN_S`` seconds for the
        thread) and drop every notification not yet sent."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(STOP_JOIN_S)
        with self._cond:
            # What was not sent never will be: nobody waits for it any more.
            self._queue.clear()
            self._pending = 0
            self._cond.notify_all()

    def submit(self, event: Json) -> None:
        """Queue ``event`` to be sent ``duplicate`` times, ``delay_ms`` from
        now; dropped if there is no URL or sending has stopped."""
        with self._cond:
            if self._url is None or self._stopped:
                return
            due = time.monotonic() + self._delay_ms / 1000
            for _ in range(self._duplicate):
                self._queue.append(_Delivery(event, due, self._forge))
            self._pending += self._duplicate
            self._cond.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until every queued notification was
        sent or given up (shuffle buffers are flushed); False on timeout."""
        with self._cond:
            self._draining += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._pending == 0, timeout_s)
            finally:
                self._draining -= 1

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            for delivery in batch:
                wait_s = delivery.due - time.monotonic()
                if wait_s > 0 and self._stopping.wait(wait_s):
                    return
                self.deliver(delivery.event, delivery.forge)
                with self._cond:
                    self._pending = max(0, self._pending - 1)
                    self._cond.notify_all()

    def _next_batch(self) -> Optional[List[_Delivery]]:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            if not self._shuffle:
                return [self._queue.popleft()]
            # Wait a little for company, so there is something to reorder;
            # a drain() flushes at once.
            deadline = time.monotonic() + CALLBACK_SHUFFLE_WAIT_MS / 1000
            while len(self._queue) < CALLBACK_SHUFFLE_BUFFER_MAX and not self._draining and not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(CALLBACK_SHUFFLE_BUFFER_MAX, len(self._queue)))]
            self._random.shuffle(batch)
            return batch

    def deliver(self, event: Json, forge: bool) -> Optional[int]:
        """POST one event, retrying connection errors and 5xx/429 answers;
        returns the last HTTP status (None: never answered)."""
        body = _json_bytes(event)
        secret = f"forged:{self._secret}" if forge else self._secret
        signature = _hmac_hex(body, secret)
        status: Optional[int] = None
        error = ""
        attempt = 0
        while attempt < CALLBACK_ATTEMPT_COUNT_MAX:
            attempt += 1
            status, error = self._post(body, signature)
            if status is not None and 200 <= status < 300:
                with self._cond:
                    self.delivered += 1
                return status
            if status is not None and 400 <= status < 500 and status != 429:
                break  # refused (a bad signature, say): sending it again changes nothing
            if attempt < CALLBACK_ATTEMPT_COUNT_MAX and self._stopping.wait(CALLBACK_RETRY_DELAY_MS * attempt / 1000):
                break
        with self._cond:
            self.failed.append(CallbackFailure(str(event["event_id"]), str(event["key"]), attempt, error))
        return status

    def _post(self, body: bytes, signature: str) -> Tuple[Optional[int], str]:
        url = self.url
        if url is None:
            return None, "no callback_url"
        with self._cond:
            self.sent += 1
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Signature": signature})
        try:
            with self._opener.open(request, timeout=CALLBACK_TIMEOUT_S) as response:
                response.read()
                return int(response.status), ""
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code), f"HTTP {exc.code}"
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- HTTP


def _forced_failure(fault: Optional[_Fault]) -> Optional[Tuple[str, bool]]:
    """The failure code a fault imposes on the provider's answer, and
    whether it is recorded as the key's definite answer."""
    if fault is None:
        return None
    if fault.kind == "insufficient_funds":
        return ("NOTENOUGH", True)
    if fault.kind == "bad_account":
        return ("ACCOUNT_INVALID", True)
    if fault.kind == "error_code":
        return (str(fault.params["code"]), bool(fault.params["record"]))
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of new connections (a worker with 64 calls in flight) must not
    # overflow the listen backlog: the clients would time out after sending.
    request_queue_size = 256

    def __init__(self, address: Tuple[str, int], provider: "FakeProvider") -> None:
        self.provider = provider
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 with keep-alive, as libcurl expects."""

    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_IDLE_TIMEOUT_S
    # Headers and body go out in separate writes; with Nagle on, an
    # event-loop client (libcurl's multi interface) waits ~40 ms for the body.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def provider(self) -> "FakeProvider":
        """The :class:`FakeProvider` this connection serves."""
        return self.server.provider

    def setup(self) -> None:
        super().setup()
        self.provider._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.provider._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        _log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------ routes

    def do_GET(self) -> None:
        self.provider._book.count_request(None)
        if not self._authorized():
            return
        path = urllib.parse.urlsplit(self.path).path
        if path == "/balance":
            self._send_json(200, {"balance_minor": self.provider._book.balance_minor})
        elif path.startswith("/payouts/") and len(path) > len("/payouts/"):
            answer = self.provider._book.answer(urllib.parse.unquote(path[len("/payouts/"):]))
            if answer is None:
                self._send_json(404, {"status": "NOT_FOUND", "return_code": "NOT_FOUND"})
            else:
                self._send_json(200, answer)
        else:
            self._send_json(404, {"return_code": "NOT_FOUND"})

    def do_POST(self) -> None:
        raw = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        key = self.headers.get("Idempotency-Key")
        self.provider._book.count_request(key if path == "/payouts" else None)
        if raw is None or not self._authorized():
            return
        if path != "/payouts":
            self._send_json(404, {"return_code": "NOT_FOUND"})
            return
        redirect = self.provider._faults.redirect_url
        if redirect is not None:
            self._send_json(307, {"return_code": "REDIRECT"}, headers=[("Location", redirect)])
            return
        if not key:
            self._send_json(400, {"return_code": "MISSING_KEY"})
            return
        request = _PayoutRequest.parse(raw)
        if request is None:
            self._send_json(400, {"return_code": "BAD_REQUEST"})
            return
        self._post_payout(key, request)

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    # ------------------------------------------------------------ POST /payouts

    def _post_payout(self, key: str, request: _PayoutRequest) -> None:
        fault = self.provider._faults.take(key)
        kind = fault.kind if fault is not None else None
        params = fault.params if fault is not None else {}
        # Faults before the provider's logic: nothing is applied.
        if kind == "error_500":
            self._send_json(500, {"return_code": "SYSTEM_ERROR"})
            return
        if kind == "rate_limited":
            self._send_json(429, {"return_code": "RATE_LIMITED"},
                            headers=[("Retry-After", str(params["retry_after_s"]))])
            return
        if kind == "slow" and not self.provider._pause(params["delay_ms"]):
            self.close_connection = True
            return
        answer = self.provider._book.submit(key, request, _forced_failure(fault))
        if answer.new_event is not None:
            self.provider._callbacks.submit(answer.new_event)
        if answer.status != 200:
            self._send_json(answer.status, answer.body)
            return
        # Faults after the provider's logic: the money has moved (or the
        # definite answer is recorded), only the answer goes wrong.
        if kind == "drop_after_apply":
            self.close_connection = True
            return
        if kind == "timeout_after_apply" and not self.provider._pause(params["delay_ms"]):
            self.close_connection = True
            return
        self._send_json(200, answer.body, size_bytes=params["size_bytes"] if kind == "huge_body" else None)

    # ------------------------------------------------------------ plumbing

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering 400/413 (the
        connection is closed then: the rest of the stream is unknown)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send_json(400, {"return_code": "BAD_REQUEST", "detail": "send a Content-Length, not chunks"})
            return None
        text = self.headers.get("Content-Length", "0")
        try:
            length = int(text)
            if length < 0:
                raise ValueError(text)
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"return_code": "BAD_REQUEST", "detail": "bad Content-Length"})
            return None
        if length > REQUEST_BYTES_MAX:
            self.close_connection = True
            self._send_json(413, {"return_code": "BAD_REQUEST", "detail": "request body too large"})
            return None
        return self.rfile.read(length)

    def _authorized(self) -> bool:
        token = self.provider._token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._send_json(401, {"return_code": "UNAUTHORIZED"}, headers=[("WWW-Authenticate", "Bearer")])
        return False

    def _not_allowed(self) -> None:
        self._read_body()
        self.provider._book.count_request(None)
        self._send_json(405, {"return_code": "METHOD_NOT_ALLOWED"}, headers=[("Allow", "GET, POST")])

    def _send_json(self, status: int, body: Json, *, headers: Iterable[Tuple[str, str]] = (),
                   size_bytes: Optional[int] = None) -> None:
        data = _json_bytes(body)
        if size_bytes is not None and len(data) < size_bytes:
            # Trailing whitespace keeps the answer valid JSON: only its size is the fault.
            data += b" " * (size_bytes - len(data))
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # The client gave up waiting (as after timeout_after_apply).
            self.close_connection = True


# ---------------------------------------------------------------- the public face


class FakeProvider:
    """A payout provider on a local HTTP server, with injectable faults.

    ``with FakeProvider() as provider:`` serves on ``provider.url`` from
    background threads until the block ends (or use :meth:`start` and
    :meth:`stop`). Keyword arguments:

    - ``host``, ``port``: where to listen (port 0: any free port);
    - ``balance_minor``: the provider's own funds; a payout above them fails
      with ``NOTENOUGH``;
    - ``callback_url``, ``callback_secret``: where result notifications go
      and the HMAC-SHA256 key that signs them (``X-Signature``);
    - ``seed``: for random faults and shuffled callbacks;
    - ``token``: if set, every request needs ``Authorization: Bearer <token>``.

    Thread-safe: tests may inject faults and read counters while requests
    are served.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        balance_minor: int = 10**12,
        callback_url: Optional[str] = None,
        callback_secret: str = "fake-secret",
        seed: int = 0,
        token: Optional[str] = None,
    ) -> None:
        if isinstance(balance_minor, bool) or not isinstance(balance_minor, int) or balance_minor < 0:
            raise ValueError("balance_minor is an int >= 0")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port is an int in 0..65535")
        self._address = (host, port)
        self._token = token
        self._callback_secret = callback_secret
        self._stopping = threading.Event()
        self._book = _Book(balance_minor)
        self._faults = _FaultPlan(seed)
        self._callbacks = _Callbacks(callback_url, callback_secret, seed, self._stopping)
        self._connections: Set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> "FakeProvider":
        """Bind and serve from background threads; returns self."""
        if self._server is not None:
            raise RuntimeError("this FakeProvider was already started")
        self._server = _Server(self._address, self)
        self._serve_thread = threading.Thread(target=self._server.serve_forever, args=(SERVE_POLL_S,),
                                              name="fake-provider", daemon=True)
        self._serve_thread.start()
        self._callbacks.start()
        return self

    def stop(self) -> None:
        """Stop serving. Requests sleeping in a fault are woken and closed
        without an answer; open connections are cut. Idempotent."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        self._server.server_close()
        self._callbacks.stop()
        if self._serve_thread is not None:
            self._serve_thread.join(STOP_JOIN_S)

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (known once started)."""
        return int(self._bound()[1])

    @property
    def url(self) -> str:
        """``http://<host>:<port>``, without a trailing slash (known once started)."""
        address = self._bound()
        host = str(address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{int(address[1])}"

    def _bound(self) -> Tuple[Any, ...]:
        if self._server is None:
            raise RuntimeError("start the FakeProvider first")
        return tuple(self._server.server_address)

    # ------------------------------------------------------------ what happened

    def applied_count(self, key: str) -> int:
        """How many times money actually moved for ``key`` (0 or 1: the
        provider never applies a key twice)."""
        return self._book.applied_count(key)

    def request_count(self, key: str) -> int:
        """How many POST /payouts requests arrived with this idempotency key,
        whatever became of them (faults, refusals, replays)."""
        return self._book.request_count(key)

    @property
    def applied(self) -> Dict[str, int]:
        """A snapshot: the amount applied per key (minor units)."""
        return self._book.applied()

    @property
    def requests_total(self) -> int:
        """Every HTTP request received, on any path."""
        return self._book.requests_total

    @property
    def balance_minor(self) -> int:
        """The provider's remaining funds."""
        return self._book.balance_minor

    def result(self, key: str) -> Optional[Dict[str, Any]]:
        """The stored answer for ``key`` (what GET /payouts/<key> returns), or None."""
        return self._book.answer(key)

    # ------------------------------------------------------------ faults

    def fault_next(self, kind: str, count: int = 1, *, key: Optional[str] = None, **params: Any) -> None:
        """Queue ``count`` faults of ``kind`` for the next POST /payouts
        requests (only those with idempotency key ``key``, if given).
        Queued faults are used in order, before any random fault. Kinds and
        parameters: ``error_500``; ``rate_limited`` (``retry_after_s``=1);
        ``slow`` (``delay_ms``=1000); ``timeout_after_apply``
        (``delay_ms``=5000); ``drop_after_apply``; ``insufficient_funds``;
        ``bad_account``; ``error_code`` (``code``="SYSTEM_ERROR",
        ``record``=False: with True the failure is the key's definite
        answer); ``huge_body`` (``size_bytes``=2 MiB)."""
        self._faults.queue(kind, count, key, params)

    def fault_rates(self, **rates: float) -> None:
        """Random faults: ``fault_rates(error_500=0.1, timeout_after_apply=0.05)``
        gives each POST /payouts without a queued fault that probability of
        each kind (seeded by ``seed``; they add up to at most 1). Replaces
        the previous rates; no arguments turns random faults off."""
        self._faults.set_rates(rates)

    def fault_defaults(self, kind: str, **params: Any) -> None:
        """Change the parameters of a kind's later faults, random ones
        included (``fault_defaults("timeout_after_apply", delay_ms=200)``)."""
        self._faults.set_defaults(kind, params)

    def fault_clear(self) -> None:
        """Forget queued faults and random rates."""
        self._faults.clear()

    def redirect_payouts_to(self, url: Optional[str]) -> None:
        """Answer every POST /payouts with a 307 to ``url`` (None: stop)."""
        self._faults.redirect_url = url

    # ------------------------------------------------------------ callbacks

    @property
    def callback_url(self) -> Optional[str]:
        """Where result notifications go (None: nowhere). Settable."""
        return self._callbacks.url

    @callback_url.setter
    def callback_url(self, url: Optional[str]) -> None:
        """Change where notifications go (None: nowhere)."""
        self._callbacks.url = url

    def callback_mode(self, duplicate: int = 1, delay_ms: int = 0, shuffle: bool = False, forge: bool = False) -> None:
        """How later notifications misbehave: each sent ``duplicate`` times,
        ``delay_ms`` after the payout, out of order (``shuffle``: a few are
        buffered and sent in a seeded random order), or signed with the
        wrong secret (``forge``)."""
        self._callbacks.configure(duplicate, delay_ms, shuffle, forge)

    def send_callback(self, key: str, *, forge: bool = False) -> Optional[int]:
        """Send the notification for ``key`` again, now, from this thread;
        returns the receiver's HTTP status (None if it never answered).
        Raises KeyError if the key has no definite answer."""
        event = self._book.event(key)
        if event is None:
            raise KeyError(key)
        return self._callbacks.deliver(event, forge)

    def callbacks_drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up
        (shuffle buffers are flushed); False if that took over ``timeout_s``."""
        return self._callbacks.drain(timeout_s)

    @property
    def callbacks_sent(self) -> int:
        """HTTP POSTs made to the callback URL (retries and duplicates included)."""
        return self._callbacks.sent

    @property
    def callbacks_delivered(self) -> int:
        """Notifications the receiver accepted (2xx)."""
        return self._callbacks.delivered

    @property
    def callbacks_failed(self) -> List[CallbackFailure]:
        """Notifications given up: never answered or refused after retries."""
        return list(self._callbacks.failed)

    @staticmethod
    def signature(body: bytes, secret: str) -> str:
        """The ``X-Signature`` of ``body``: hex HMAC-SHA256 with ``secret``."""
        return _hmac_hex(body, secret)

    @staticmethod
    def verify_signature(body: bytes, signature: str, secret: str) -> bool:
        """True if ``signature`` is ``body``'s signature under ``secret``
        (compared in constant time)."""
        if not isinstance(signature, str):
            return False
        return hmac.compare_digest(_hmac_hex(body, secret).encode(), signature.strip().lower().encode())

    # ------------------------------------------------------------ for the handler threads

    def _pause(self, delay_ms: int) -> bool:
        """Sleep for a fault; False if the provider stops meanwhile."""
        return not self._stopping.wait(delay_ms / 1000)

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"<FakeProvider {where} requests={self.requests_total}>"
