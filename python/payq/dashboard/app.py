"""The dashboard as a WSGI application: routing, authentication, CSRF
checks and security headers around the views of :mod:`payq.dashboard.views`.

Mount it anywhere (``SCRIPT_NAME`` is honoured): ``payq dashboard`` serves
it with its own token login; :func:`make_app` with ``authenticate=`` lets a
host application (Django, Flask, any WSGI stack) put its own authentication
in front of it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import string
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from types import TracebackType
from typing import Callable, Dict, Iterable, List, Optional, Pattern, Sequence, Tuple, Type
from urllib.parse import urlsplit

import payq
from payq.dashboard import queues, task_list, views, workers
from payq.dashboard.audit import AuditCache
from payq.dashboard.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Authenticate,
    Csrf,
    LoginThrottle,
    Signer,
    TokenLogin,
    operator_name_check,
    same_origin,
)
from payq.dashboard.render import login_page, message_page
from payq.dashboard.throughput import Throughput
from payq.dashboard.wsgi import Environ, HttpError, Request, Response, StartResponse

__all__ = ["DashboardApp", "make_app"]

log = logging.getLogger("payq.dashboard")

NONCE_CHARS_MAX = 64
NEXT_CHARS_MAX = 2000
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = [
    # Scripts and styles only from the dashboard's own static files: an
    # injected <script> would not run even if escaping ever failed.
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
_ID = r"([0-9]{1,18})"
_QUEUE = r"([A-Za-z0-9_.:-]{1,100})"


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: Pattern[str]
    view: Callable[..., Response]


_ROUTES: Sequence[_Route] = [
    _Route("GET", re.compile(r"^/$"), views.overview),
    _Route("GET", re.compile(r"^/throughput\.json$"), views.throughput_json),
    _Route("GET", re.compile(r"^/tasks$"), task_list.tasks_list),
    _Route("POST", re.compile(r"^/tasks/bulk$"), task_list.tasks_bulk),
    _Route("GET", re.compile(rf"^/tasks/{_ID}$"), views.task_detail),
    _Route("POST", re.compile(rf"^/tasks/{_ID}/({'|'.join(payq.outbox.ACTIONS)})$"), views.task_action),
    _Route("GET", re.compile(r"^/queues$"), queues.queues_list),
    _Route("GET", re.compile(rf"^/queues/{_QUEUE}$"), queues.queue_detail),
    _Route("POST", re.compile(rf"^/queues/{_QUEUE}/(pause|resume|limits)$"), queues.queue_action),
    _Route("GET", re.compile(r"^/workers$"), workers.workers_page),
    _Route("GET", re.compile(r"^/accounts$"), views.accounts_list),
    _Route("GET", re.compile(rf"^/accounts/{_ID}$"), views.account_detail),
    _Route("GET", re.compile(rf"^/transactions/{_ID}$"), views.transaction_detail),
    _Route("GET", re.compile(r"^/audit$"), views.audit_page),
]


def _static_files() -> Dict[str, Tuple[bytes, str, str]]:
    """name -> (content, content type, ETag), read once from the package."""
    files: Dict[str, Tuple[bytes, str, str]] = {}
    for entry in resources.files("payq.dashboard").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _STATIC_TYPES:
            content = entry.read_bytes()
            files[entry.name] = (content, _STATIC_TYPES[suffix], '"' + hashlib.sha256(content).hexdigest()[:16] + '"')
    return files


def _safe_next(text: Optional[str]) -> str:
    """A path inside the dashboard to go to after login; anything else
    (another host, a scheme, odd characters) becomes the overview."""
    if not text or len(text) > NEXT_CHARS_MAX or not text.startswith("/") or text.startswith("//"):
        return "/"
    if any(c not in string.printable or c in "\\\r\n\t\x0b\x0c" for c in text):
        return "/"
    return text


def _origin(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"an allowed origin is scheme://host[:port], not {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


class DashboardApp:
    """payq's web dashboard, a WSGI application. Build it with
    :func:`make_app`; call :meth:`close` (or use ``with``) to stop its
    sampler thread."""

    def __init__(self, db: "payq.Database", *, token: Optional[str] = None,
                 authenticate: Optional[Authenticate] = None, secret: Optional[bytes] = None,
                 allowed_origins: Iterable[str] = (), sample_interval: timedelta = timedelta(seconds=10),
                 sample_in_background: bool = False, secure_cookies: Optional[bool] = None) -> None:
        if (token is None) == (authenticate is None):
            raise ValueError("give the dashboard either a login token or an authenticate callable")
        self.db = db
        self._login = TokenLogin(token) if token is not None else None
        self._login_throttle = LoginThrottle()
        self._authenticate = authenticate
        if self._login is not None:
            signer = self._login.signer
        else:
            # Without a shared secret, CSRF tokens are valid in this process
            # only: enough for one server, not for several behind a balancer.
            signer = Signer(hashlib.sha256(b"payq dashboard csrf|" + secret).digest() if secret
                            else secrets.token_bytes(32))
        self._csrf = Csrf(signer)
        self._allowed_origins = frozenset(_origin(o) for o in allowed_origins)
        self._secure_cookies = secure_cookies
        self.throughput = Throughput(db.reader, interval=sample_interval)
        self.audits = AuditCache(db.reader)
        self._static = _static_files()
        if sample_in_background:
            self.throughput.start()

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the background sampler, if any."""
        self.throughput.stop()

    def __enter__(self) -> "DashboardApp":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    # ------------------------------------------------------------ WSGI

    def __call__(self, environ: Environ, start_response: StartResponse) -> List[bytes]:
        response = self._respond(environ)
        names = {name.lower() for name, _ in response.headers}
        response.headers.extend(h for h in _SECURITY_HEADERS if h[0].lower() not in names)
        if "cache-control" not in names:
            response.headers.append(("Cache-Control", "no-store"))
        return response.start(start_response)

    def _respond(self, environ: Environ) -> Response:
        static = str(environ.get("SCRIPT_NAME", "")).rstrip("/") + "/static"
        try:
            request = Request.from_environ(environ)
            static = request.url("/static")
            if request.path.startswith("/static/"):
                return self._static_file(request)
            return self._handle(request)
        except HttpError as exc:
            return self._message(exc.status, static, exc.message)
        except (payq.UnknownTask, payq.UnknownAccount) as exc:
            return self._message(404, static, str(exc))
        except payq.DatabaseError as exc:
            log.error("payq dashboard: database error: %s: %s", type(exc).__name__, exc)
            return self._message(503, static, "The database cannot be reached or refused the request; "
                                              "see the dashboard's log.")
        except payq.Error as exc:
            return self._message(400, static, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("payq dashboard: unexpected error")
            return self._message(500, static, "Internal error; see the dashboard's log.")

    def _message(self, status: int, static: str, message: str) -> Response:
        titles = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found",
                  405: "Method not allowed", 409: "Refused", 413: "Too large", 415: "Unsupported",
                  500: "Internal error", 503: "Database unavailable"}
        body = message_page(title=titles.get(status, "Error"), static=static, message=message,
                            link=static[: -len("/static")] + "/")
        return Response(status, body.encode("utf-8"))

    def _static_file(self, request: Request) -> Response:
        found = self._static.get(request.path[len("/static/"):])
        if found is None or request.method != "GET":
            raise HttpError(404, "no such file")
        content, content_type, etag = found
        headers = [("ETag", etag), ("Cache-Control", "no-cache")]
        if request.header("If-None-Match") == etag:
            return Response(304, b"", content_type, headers)
        return Response(200, content, content_type, headers)

    # ------------------------------------------------------------ auth

    def _secure(self, request: Request) -> bool:
        if self._secure_cookies is not None:
            return self._secure_cookies
        return request.scheme == "https"

    def _cookie_path(self, request: Request) -> str:
        return request.script_name or "/"

    def _actor(self, request: Request) -> Optional[str]:
        if self._login is not None:
            session = self._login.session(request.cookies.get(SESSION_COOKIE))
            return None if session is None else session.actor
        assert self._authenticate is not None
        actor = self._authenticate(request.environ)
        return actor if isinstance(actor, str) and actor else None

    def _check_post(self, request: Request, nonce: str, actor: str) -> None:
        """Refuse a state-changing request that did not come from the
        dashboard's own form in this browser, for this actor."""
        if not same_origin(request, self._allowed_origins):
            raise HttpError(403, "Refused: this request did not come from the dashboard's own pages "
                                 "(Origin/Referer check).")
        if not self._csrf.valid(nonce, actor, request.form().get("csrf")):
            raise HttpError(403, "Refused: the form's CSRF token is missing or stale. Reload the page and "
                                 "try again.")

    def _handle(self, request: Request) -> Response:
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh_nonce = not nonce or len(nonce) > NONCE_CHARS_MAX
        if fresh_nonce:
            nonce = Csrf.new_nonce()
        if self._login is not None and request.path in ("/login", "/logout"):
            response = self._login_route(request, nonce)
        else:
            actor = self._actor(request)
            if actor is None:
                response = self._unauthenticated(request)
            else:
                response = self._dispatch(request, actor, nonce)
        if fresh_nonce and not any(v.startswith(CSRF_COOKIE + "=") for k, v in response.headers if k == "Set-Cookie"):
            response.set_cookie(CSRF_COOKIE, nonce, path=self._cookie_path(request), secure=self._secure(request))
        return response

    def _unauthenticated(self, request: Request) -> Response:
        if self._login is None:
            raise HttpError(403, "You are not allowed to use payq's dashboard.")
        if request.method != "GET":
            raise HttpError(401, "Log in first.")
        query = request.environ.get("QUERY_STRING", "")
        return Response.redirect(request.url("/login", next=request.path + ("?" + query if query else "")))

    def _dispatch(self, request: Request, actor: str, nonce: str) -> Response:
        allowed = set()
        for route in _ROUTES:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.add(route.method)
                continue
            if request.method == "POST":
                self._check_post(request, nonce, actor)
            context = views.Context(db=self.db, request=request, actor=actor, csrf=self._csrf.token(nonce, actor),
                                    throughput=self.throughput, audits=self.audits, logout=self._login is not None)
            return route.view(context, *match.groups())
        if allowed:
            response = self._message(405, request.url("/static"), "Method not allowed.")
            response.headers.append(("Allow", ", ".join(sorted(allowed))))
            return response
        raise HttpError(404, "No such page.")

    # ------------------------------------------------------------ the dashboard's own login

    def _login_route(self, request: Request, nonce: str) -> Response:
        assert self._login is not None
        session = self._login.session(request.cookies.get(SESSION_COOKIE))
        if request.path == "/logout":
            if request.method != "POST":
                raise HttpError(405, "Log out with the button.")
            if session is not None:
                self._check_post(request, nonce, session.actor)
                # Revoked, not only cleared: a copy of the cookie (another
                # tab's, a stolen one) no longer opens the dashboard.
                self._login.session_revoke(request.cookies.get(SESSION_COOKIE))
            response = Response.redirect(request.url("/login"))
            response.delete_cookie(SESSION_COOKIE, path=self._cookie_path(request), secure=self._secure(request))
            return response
        if request.method == "GET":
            if session is not None:
                return Response.redirect(request.script_name + _safe_next(request.query.get("next")))
            return self._login_form(request, nonce, _safe_next(request.query.get("next")))
        if request.method != "POST":
            raise HttpError(405, "Method not allowed.")
        # The login form is CSRF-protected too (actor "": nobody yet), so
        # another site cannot log a browser into an operator name it chose.
        self._check_post(request, nonce, "")
        form = request.form()
        next_path = _safe_next(form.get("next"))
        operator = operator_name_check(form.get("operator", ""))
        if operator is None:
            return self._login_form(request, nonce, next_path, status=400,
                                    error="An operator name is 1 to 64 letters, digits and . @ + - _")
        address = str(request.environ.get("REMOTE_ADDR") or "?")
        wait_s = self._login_throttle.retry_after_s(address)
        if wait_s is not None:
            # Refused unchecked: guessing goes no faster than the limit.
            log.warning("payq dashboard: login for operator %r from %s refused: too many wrong tokens", operator,
                        address)
            refused = self._login_form(request, nonce, next_path, status=429,
                                       error=f"Too many wrong tokens: try again in {math.ceil(wait_s)} seconds.")
            refused.headers.append(("Retry-After", str(math.ceil(wait_s))))
            return refused
        if not self._login.token_matches(form.get("token", "")):
            self._login_throttle.failed(address)
            log.warning("payq dashboard: failed login for operator %r from %s", operator, address)
            return self._login_form(request, nonce, next_path, status=401, error="Wrong token.")
        self._login_throttle.succeeded(address)
        log.info("payq dashboard: operator %r logged in", operator)
        response = Response.redirect(request.script_name + next_path)
        path, secure = self._cookie_path(request), self._secure(request)
        response.set_cookie(SESSION_COOKIE, self._login.session_cookie(operator), path=path, secure=secure,
                            max_age=SESSION_TTL_S)
        # A new nonce at login: a token seen before login is worthless after it.
        response.set_cookie(CSRF_COOKIE, Csrf.new_nonce(), path=path, secure=secure)
        return response

    def _login_form(self, request: Request, nonce: str, next_path: str, *, status: int = 200,
                    error: Optional[str] = None) -> Response:
        body = login_page(static=request.url("/static"), action=request.url("/login"),
                          csrf=self._csrf.token(nonce, ""), next_path=next_path, error=error)
        return Response(status, body.encode("utf-8"))


def make_app(db: "payq.Database", *, authenticate: Optional[Authenticate] = None, token: Optional[str] = None,
             secret: Optional[bytes] = None, allowed_origins: Iterable[str] = (),
             sample_interval: timedelta = timedelta(seconds=10), sample_in_background: bool = False,
             secure_cookies: Optional[bool] = None) -> DashboardApp:
    """payq's dashboard as a WSGI application on ``db``.

    Give exactly one of:

    - ``authenticate``: a callable ``environ -> actor or None``; the host
      application's authentication decides who may enter, and the actor it
      returns (``"django:alice"``) is recorded with every action. ``secret``
      (bytes, e.g. derived from the host's secret key) makes CSRF tokens
      valid across processes; without it they are valid in this process only.
    - ``token``: the dashboard's own login with this shared token (at least
      16 characters); operators are recorded as ``dashboard:<name>``.

    ``allowed_origins`` lists the public origins (``https://ops.example.com``)
    when a proxy serves the dashboard under another scheme or host than the
    one the WSGI server sees; ``secure_cookies`` forces the cookies' Secure
    flag (by default: when the request came over https). The throughput
    chart samples on demand, or every ``sample_interval`` from a thread
    with ``sample_in_background`` (stop it with :meth:`DashboardApp.close`).
    """
    return DashboardApp(db, token=token, authenticate=authenticate, secret=secret, allowed_origins=allowed_origins,
                        sample_interval=sample_interval, sample_in_background=sample_in_background,
                        secure_cookies=secure_cookies)
