"""Who may use the dashboard, and proof that a form came from it.

Two ways in:

- **the dashboard's own token** (``payq dashboard``): the login page takes
  the shared token and an operator name; a signed session cookie
  (HttpOnly, SameSite=Strict) carries the name, and actions are recorded as
  ``dashboard:<name>``;
- **the host application's authentication** (Django, Flask, any WSGI
  stack): an ``authenticate(environ)`` callable returns the actor to record
  (``django:alice``) or None to refuse.

State-changing requests (every POST) must pass two checks: the request's
``Origin`` (or, without one, its ``Referer``) is the dashboard's own origin,
and the form carries a CSRF token: an HMAC of a random per-browser nonce
(kept in an HttpOnly, SameSite=Strict cookie) and the actor. Another site
can neither read the nonce nor compute the HMAC, and a token minted for one
operator is worthless to another. Every comparison of a secret is
constant-time.

Failed token logins are limited per client address (:class:`LoginThrottle`),
and logging out revokes the session cookie (:meth:`TokenLogin.session_revoke`),
so a copy of it no longer opens the dashboard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Collection, Dict, Optional, Tuple
from urllib.parse import urlsplit

from payq.dashboard.wsgi import Environ, Request

__all__ = [
    "Authenticate",
    "Signer",
    "Session",
    "TokenLogin",
    "LoginThrottle",
    "Csrf",
    "generate_token",
    "operator_name_check",
    "same_origin",
    "SESSION_COOKIE",
    "CSRF_COOKIE",
    "TOKEN_CHARS_MIN",
]

Authenticate = Callable[[Environ], Optional[str]]
"""The host application's check: the actor to record for this request, or None."""

SESSION_COOKIE = "payq_dashboard_session"
CSRF_COOKIE = "payq_dashboard_csrf"
SESSION_TTL_S = 12 * 3600
TOKEN_CHARS_MIN = 16
"""A shorter ``PAYQ_DASHBOARD_TOKEN`` is refused: it could be guessed."""
OPERATOR_NAME_CHARS_MAX = 64
REVOKED_SESSIONS_MAX = 10_000
"""Logged-out sessions remembered until they expire. One more ends every
session issued so far (everyone logs in again), so the memory stays bounded
and no revoked cookie ever works again."""
LOGIN_FAILURES_MAX = 5
"""Wrong tokens one client address may try per LOGIN_FAILURE_WINDOW_S."""
LOGIN_FAILURE_WINDOW_S = 60.0
LOGIN_ADDRESSES_MAX = 10_000
"""Client addresses with recent failures remembered (the least recent is
forgotten first)."""
_OPERATOR_NAME = re.compile(r"^[\w.@+-]+$")


def generate_token() -> str:
    """A fresh login token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 under one key, over a purpose and length-prefixed parts
    (so that no two different lists of parts sign the same bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a signing key has at least 16 bytes")
        self._key = key

    def sign(self, purpose: str, *parts: str) -> str:
        """The signature of ``parts`` for ``purpose``: URL-safe base64, unpadded."""
        # Every field is length-prefixed, so no two (purpose, parts) share a message.
        message = b"".join(b"%d:%s|" % (len(field), field) for field in (s.encode() for s in (purpose, *parts)))
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def verify(self, signature: str, purpose: str, *parts: str) -> bool:
        """True if ``signature`` is :meth:`sign` of ``purpose`` and ``parts`` (constant-time)."""
        return hmac.compare_digest(signature.encode(), self.sign(purpose, *parts).encode())


def operator_name_check(name: str) -> Optional[str]:
    """The operator name as it will be recorded, or None if it is not one
    (1–64 letters, digits and ``. @ + - _``)."""
    name = name.strip()
    if not 1 <= len(name) <= OPERATOR_NAME_CHARS_MAX or not _OPERATOR_NAME.match(name):
        return None
    return name


@dataclass(frozen=True)
class Session:
    """A logged-in operator, from the session cookie."""

    operator: str
    expires_at: int

    @property
    def actor(self) -> str:
        """The actor recorded for this operator's actions: ``dashboard:<operator>``."""
        return f"dashboard:{self.operator}"


class TokenLogin:
    """The dashboard's own login: one shared token; sessions are signed
    cookies under a key derived from the token, so changing the token ends
    every session, and restarting with the same token keeps them."""

    def __init__(self, token: str) -> None:
        if len(token) < TOKEN_CHARS_MIN:
            raise ValueError(f"the dashboard token has at least {TOKEN_CHARS_MIN} characters")
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self.signer = Signer(hmac.new(token.encode(), b"payq dashboard v1", hashlib.sha256).digest())
        # Revoked sessions (the digest of their signature) -> when they
        # expire anyway; and a time before which every session counts as
        # revoked (set when the list is full). Guarded by _revoked_lock.
        self._revoked: Dict[bytes, int] = {}
        self._issued_not_before = 0
        self._revoked_lock = threading.Lock()

    def token_matches(self, candidate: str) -> bool:
        """True if ``candidate`` is the login token (constant-time)."""
        # Digests first: compare_digest is constant-time only for equal lengths.
        return hmac.compare_digest(hashlib.sha256(candidate.encode()).digest(), self._token_digest)

    def session_cookie(self, operator: str, now: Optional[float] = None) -> str:
        """A signed session cookie value for ``operator``, valid for
        ``SESSION_TTL_S`` seconds (12 hours) from ``now`` (Unix time in
        seconds; default the current time)."""
        expires_at = int(now if now is not None else time.time()) + SESSION_TTL_S
        # A random session id: two logins of one operator in one second are
        # still two sessions, and logging out of one leaves the other.
        payload = f"{expires_at}.{_b64(operator.encode())}.{_b64(secrets.token_bytes(12))}"
        return f"{payload}.{self.signer.sign('session', payload)}"

    def session(self, cookie: Optional[str], now: Optional[float] = None) -> Optional[Session]:
        """The session a cookie proves, or None (absent, forged, expired)."""
        if not cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not payload or not self.signer.verify(signature, "session", payload):
            return None
        parts = payload.split(".")
        if len(parts) != 3:
            return None
        expires_text, name_b64, _ = parts
        try:
            expires_at = int(expires_text)
            operator = _unb64(name_b64).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if expires_at <= (now if now is not None else time.time()) or operator_name_check(operator) != operator:
            return None
        with self._revoked_lock:
            if hashlib.sha256(signature.encode()).digest() in self._revoked:
                return None
            if expires_at - SESSION_TTL_S <= self._issued_not_before:
                return None
        return Session(operator, expires_at)

    def session_revoke(self, cookie: Optional[str], now: Optional[float] = None) -> None:
        """Ends the session ``cookie`` proves (logout): from now on
        :meth:`session` refuses it, in this process. A no-op for a cookie
        that proves none."""
        session = self.session(cookie, now)
        if session is None or cookie is None:
            return
        now_s = int(now if now is not None else time.time())
        signature = cookie.rpartition(".")[2]
        with self._revoked_lock:
            if len(self._revoked) >= REVOKED_SESSIONS_MAX:  # expired ones need no revoking any more
                self._revoked = {digest: expires for digest, expires in self._revoked.items() if expires > now_s}
            if len(self._revoked) >= REVOKED_SESSIONS_MAX:
                # Full of sessions still valid: end every session issued so
                # far instead of forgetting one of them.
                self._revoked.clear()
                self._issued_not_before = now_s
                return
            self._revoked[hashlib.sha256(signature.encode()).digest()] = session.expires_at


class LoginThrottle:
    """Failed token logins per client address: after ``failures_max``
    failures within ``window_s`` seconds, the address's next logins are
    refused without being checked until the window ends. At most
    ``addresses_max`` addresses are remembered; the one whose last failure
    is oldest is forgotten first. Thread-safe."""

    def __init__(self, failures_max: int = LOGIN_FAILURES_MAX, window_s: float = LOGIN_FAILURE_WINDOW_S,
                 addresses_max: int = LOGIN_ADDRESSES_MAX, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures_max = failures_max
        self._window_s = window_s
        self._addresses_max = addresses_max
        self._clock = clock
        # address -> (start of its window, failures in it), least recently failed first.
        self._failures: "OrderedDict[str, Tuple[float, int]]" = OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, address: str) -> Optional[float]:
        """Seconds until ``address`` may try a token again; None: now."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return None
            started, count = entry
            left = started + self._window_s - self._clock()
            if left <= 0:
                del self._failures[address]
                return None
            return left if count >= self._failures_max else None

    def failed(self, address: str) -> None:
        """Counts a wrong token from ``address``."""
        with self._lock:
            now = self._clock()
            started, count = self._failures.pop(address, (now, 0))
            if started + self._window_s <= now:
                started, count = now, 0
            self._failures[address] = (started, count + 1)
            while len(self._failures) > self._addresses_max:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """Forgets ``address``'s failures (a correct token)."""
        with self._lock:
            self._failures.pop(address, None)


class Csrf:
    """Tokens that bind a form to one browser (the nonce cookie) and one actor."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    @staticmethod
    def new_nonce() -> str:
        """A fresh per-browser nonce for the CSRF cookie: 256 random bits, URL-safe."""
        return secrets.token_urlsafe(32)

    def token(self, nonce: str, actor: str) -> str:
        """The CSRF token for ``actor``'s forms in the browser holding ``nonce``."""
        return self._signer.sign("csrf", nonce, actor)

    def valid(self, nonce: Optional[str], actor: str, presented: Optional[str]) -> bool:
        """True if ``presented`` is :meth:`token` of ``nonce`` and ``actor``
        (constant-time); False when either is missing."""
        if not nonce or not presented:
            return False
        return self._signer.verify(presented, "csrf", nonce, actor)


def same_origin(request: Request, allowed_origins: Collection[str] = ()) -> bool:
    """True when a state-changing request comes from the dashboard's own
    pages: its ``Origin`` (or, without one, its ``Referer``) is this
    server's origin or one of ``allowed_origins`` (the public URL behind a
    proxy). A request with neither header is refused."""
    accepted = {request.origin, *allowed_origins}
    origin = request.header("Origin")
    if origin is not None:
        return origin in accepted
    referer = request.header("Referer")
    if not referer:
        return False
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}" in accepted
