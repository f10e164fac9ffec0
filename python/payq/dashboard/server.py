"""Serving the dashboard with the standard library's WSGI server, one
thread per request: ``payq dashboard`` runs :func:`run`; tests and
embedding code use :class:`DashboardServer`."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from datetime import timedelta
from types import FrameType, TracebackType
from typing import Any, Callable, Dict, Iterable, Optional, TextIO, Type
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import payq
from payq._serving import BoundedThreadingMixIn, ServingLimits, ServingThread, bounded, listening
from payq.dashboard.app import make_app
from payq.dashboard.auth import TOKEN_CHARS_MIN, generate_token
from payq.dashboard.wsgi import WsgiApp

__all__ = ["DashboardServer", "serve", "run", "TOKEN_ENV"]

log = logging.getLogger("payq.dashboard")

TOKEN_ENV = "PAYQ_DASHBOARD_TOKEN"
POLL_INTERVAL_S = 0.2
"""How often the serving loop looks for a shutdown request."""


class _ThreadingWSGIServer(BoundedThreadingMixIn, WSGIServer):
    # Daemon threads (BoundedThreadingMixIn): a hung browser connection must
    # not block shutdown.
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    """One log line per request, without the query string: searches by
    key are nobody's business in a log file."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.info("%s %s %s %s", self.client_address[0], self.command, self.path.split("?", 1)[0], code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s " + format, self.client_address[0], *args)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class DashboardServer:
    """A WSGI application served on ``host:port`` (port 0: any free port)
    from a background thread, until :meth:`stop` or the end of a ``with``.
    ``limits``: how long a connection may last and how many are served at
    once (:class:`payq.ServingLimits`; its defaults when None)."""

    def __init__(self, app: WsgiApp, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[ServingLimits] = None) -> None:
        server_class = _ThreadingWSGIServer6 if _is_ipv6(host) else _ThreadingWSGIServer
        self._server = listening(lambda: make_server(host, port, app, server_class=server_class,
                                                     handler_class=_Handler), host, port)
        bounded(self._server, limits)
        self._serving = ServingThread(self._server, "payq-dashboard-server", POLL_INTERVAL_S)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when given 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where the dashboard answers, e.g. ``http://127.0.0.1:8080/``."""
        host = str(self._server.server_address[0])
        return f"http://[{host}]:{self.port}/" if _is_ipv6(host) else f"http://{host}:{self.port}/"

    def start(self) -> "DashboardServer":
        """Serve from a background thread (a no-op if already serving) and return ``self``."""
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests, wait for the loop, close the socket (idempotent)."""
        self._serving.stop()

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
