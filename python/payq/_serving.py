"""A ``socketserver`` served from a daemon thread: the start/stop life
cycle that the metrics, dashboard and callback servers share, and the
bounds they put on their clients (:class:`ServingLimits`,
:class:`BoundedThreadingMixIn`)."""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from payq.errors import ConfigError, InvalidArgument

log = logging.getLogger("payq.serving")

_BUSY_ANSWER = (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n")


@dataclass(frozen=True)
class ServingLimits:
    """The bounds a payq HTTP server (inbox, dashboard, metrics) puts on
    its clients, so that slow or idle ones cannot hold its threads.

    ``timeout_s``: a connection carries one request (HTTP/1.0); it is closed
    this long after it was accepted, whether the client has finished
    sending or not. Every read waits at most this long too.
    ``connection_count_max``: connections served at once, one thread each;
    a connection beyond it is answered 503 (``Retry-After: 1``) and closed
    at once, without a thread.
    """

    timeout_s: float = 30.0
    connection_count_max: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not 0 < self.timeout_s <= 3600:
            raise InvalidArgument(f"timeout_s must be more than 0 and at most 3600, got {self.timeout_s!r}")
        if isinstance(self.connection_count_max, bool) or not isinstance(self.connection_count_max, int) \
                or not 1 <= self.connection_count_max <= 10_000:
            raise InvalidArgument(f"connection_count_max must be 1..10000, got {self.connection_count_max!r}")


class BoundedThreadingMixIn(socketserver.ThreadingMixIn):
    """One daemon thread per connection, at most
    ``limits.connection_count_max`` of them, each connection closed
    ``limits.timeout_s`` after it was accepted (set ``limits`` with
    :func:`bounded` before serving).

    The serving loop enforces the deadline (:meth:`service_actions` runs
    every poll interval): a socket past it is shut down, which ends any read
    or write its thread is blocked in. A read timeout alone would not do: a
    client sending one byte per timeout would hold its thread forever.
    """

    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of clients
    # waits there for the serving loop instead of having its SYNs dropped.
    request_queue_size = 128
    limits = ServingLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Accepted sockets being served, by id, with their deadlines.
        self._connections: Dict[int, Tuple[socket.socket, float]] = {}
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            busy = len(self._connections) >= self.limits.connection_count_max
            if not busy:
                request.settimeout(self.limits.timeout_s)
                self._connections[id(request)] = (request, time.monotonic() + self.limits.timeout_s)
        if busy:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def service_actions(self) -> None:
        super().service_actions()  # type: ignore[misc]  # BaseServer's, after the mixin in the MRO
        now = time.monotonic()
        with self._connections_lock:
            expired = [sock for sock, deadline in self._connections.values() if deadline <= now]
        for sock in expired:
            # Shut down, not closed: the connection's own thread closes it,
            # so its descriptor is never reused under that thread's feet.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or was timed out is routine; anything
        else is logged with its traceback (never printed to stderr)."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %r", client_address, sys.exc_info()[1])
        else:
            log.exception("serving a request from %s failed", client_address)

    def connection_count(self) -> int:
        """Connections being served now."""
        with self._connections_lock:
            return len(self._connections)

    def _refuse(self, request: Any) -> None:
        # Written without waiting: a client that does not read its answer
        # cannot hold the serving loop either.
        try:
            request.setblocking(False)
            request.send(_BUSY_ANSWER)
        except OSError:
            pass
        self.shutdown_request(request)  # type: ignore[attr-defined]

    def _forget(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(id(request), None)


ServerT = TypeVar("ServerT", bound=socketserver.BaseServer)


def listening(make: Callable[[], ServerT], host: str, port: int) -> ServerT:
    """``make()``, the server bound to ``host:port``; ConfigError naming the
    address when it cannot listen there (in use, no such host, no right)."""
    try:
        return make()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def bounded(server: socketserver.BaseServer, limits: Optional[ServingLimits]) -> None:
    """Sets ``limits`` (None: the defaults) on a :class:`BoundedThreadingMixIn`
    server, before it serves."""
    if limits is not None and not isinstance(limits, ServingLimits):
        raise InvalidArgument("limits must be a payq.ServingLimits")
    assert isinstance(server, BoundedThreadingMixIn), "a payq server serves with BoundedThreadingMixIn"
    server.limits = limits if limits is not None else ServingLimits()


class ServingThread:
    """Runs ``server.serve_forever`` on a daemon thread named ``name``.

    :meth:`start` is a no-op while serving; :meth:`stop` is idempotent and
    safe before :meth:`start` (``shutdown()`` waits for a serving loop, so
    it is called only when one runs). The socket is closed by :meth:`stop`.
    """

    def __init__(self, server: socketserver.BaseServer, name: str, poll_interval_s: float = 0.5) -> None:
        self.server = server
        self._name = name
        self._poll_interval_s = poll_interval_s
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Serve from the thread, unless it already does."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, args=(self._poll_interval_s,),
                                            name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.server.shutdown()
            thread.join()
        self.server.server_close()
