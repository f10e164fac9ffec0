"""Serving the dashboard with waitress (:class:`payq._serving.WsgiServer`):
``payq dashboard`` runs :func:`run`; tests and embedding code use
:class:`DashboardServer`."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType, TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO, Type

import payq
from payq._serving import ServingLimits, WsgiServer
from payq.dashboard.app import make_app
from payq.dashboard.auth import TOKEN_CHARS_MIN, generate_token
from payq.dashboard.wsgi import WsgiApp

__all__ = ["DashboardServer", "serve", "run", "TOKEN_ENV"]

log = logging.getLogger("payq.dashboard")

TOKEN_ENV = "PAYQ_DASHBOARD_TOKEN"
POLL_INTERVAL_S = 0.2
"""How often :func:`serve` looks for a stop signal."""
# The dashboard's forms are small; a larger body is refused (413) unread.
BODY_BYTES_MAX = 256 * 1024


def _logged(app: WsgiApp) -> WsgiApp:
    """``app`` with one log line per request, without the query string:
    searches by key are nobody's business in a log file."""

    def logged_app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        statuses: List[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        try:
            return app(environ, recording_start_response)
        finally:
            log.info("%s %s %s %s", environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD", "-"),
                     environ.get("PATH_INFO", "/"), statuses[-1] if statuses else "-")

    return logged_app


class DashboardServer:
    """A WSGI application served on ``host:port`` (port 0: any free port)
    from a background thread by waitress (HTTP/1.1), until :meth:`stop` or
    the end of a ``with``. ``limits``: how long a client may take over a
    request, how many connections are open and how many requests handled at
    once (:class:`payq.ServingLimits`; its defaults when None)."""

    def __init__(self, app: WsgiApp, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[ServingLimits] = None) -> None:
        self._server = WsgiServer(_logged(app), host=host, port=port, limits=limits,
                                  name="payq-dashboard-server", body_bytes_max=BODY_BYTES_MAX)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when given 0)."""
        return self._server.port

    @property
    def url(self) -> str:
        """Where the dashboard answers, e.g. ``http://127.0.0.1:8080/``."""
        return self._server.url

    def connection_count(self) -> int:
        """Connections open now."""
        return self._server.connection_count()

    def start(self) -> "DashboardServer":
        """Serve from a background thread (a no-op if already serving) and return ``self``."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests, let those being handled finish, close
        the socket (idempotent)."""
        self._server.stop()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()


def serve(db: "payq.Database", *, token: str, host: str = "127.0.0.1", port: int = 8080,
          allowed_origins: Iterable[str] = (), on_ready: Callable[[str], None] = lambda url: None,
          sample_interval: timedelta = timedelta(seconds=10)) -> None:
    """Serve the dashboard with its own token login until SIGINT or
    SIGTERM (call from the main thread)."""
    origins = list(allowed_origins)
    stop = threading.Event()

    def request_stop(signum: int, frame: Optional[FrameType]) -> None:
        """Signal handler: end the serving loop."""
        stop.set()

    previous: Dict[int, Any] = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with make_app(db, token=token, allowed_origins=origins, sample_interval=sample_interval,
                      sample_in_background=True,
                      secure_cookies=True if any(o.startswith("https:") for o in origins) else None) as app, \
                DashboardServer(app, host=host, port=port) as server:
            on_ready(server.url)
            while not stop.wait(POLL_INTERVAL_S * 5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(db: "payq.Database", *, host: str, port: int, allowed_origins: Iterable[str] = (),
        err: Optional[TextIO] = None) -> int:
    """``payq dashboard``: the token comes from ``PAYQ_DASHBOARD_TOKEN`` or
    is generated and printed once on ``err`` (default stderr), where the
    log goes too."""
    err = err if err is not None else sys.stderr
    token = os.environ.get(TOKEN_ENV)
    generated = not token
    if not token:
        token = generate_token()
    elif len(token) < TOKEN_CHARS_MIN:
        raise payq.ConfigError(f"{TOKEN_ENV} is too short: use at least {TOKEN_CHARS_MIN} random characters")
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("payq dashboard: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def ready(url: str) -> None:
        """Print where the dashboard serves, the generated token if any, and a
        warning when ``host`` is not loopback."""
        print(f"payq dashboard: serving {url} (SIGINT or SIGTERM stops it)", file=err, flush=True)
        if generated:
            print(f"payq dashboard: login token (shown once; set {TOKEN_ENV} to choose one): {token}",
                  file=err, flush=True)
        if not _is_loopback(host):
            print("payq dashboard: listening beyond this machine over plain HTTP; put TLS in front and "
                  "pass --origin https://...", file=err, flush=True)

    try:
        serve(db, token=token, host=host, port=port, allowed_origins=allowed_origins, on_ready=ready)
    finally:
        log.removeHandler(handler)
    print("payq dashboard: stopped", file=err, flush=True)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
