"""How payq serves HTTP (dashboard, metrics, provider callbacks): a WSGI
application on waitress (:class:`WsgiServer`), an HTTP/1.1 server whose
one event loop reads and writes every connection, so slow clients hold no
thread, and whose application threads are a fixed pool; and the bounds put
on clients (:class:`ServingLimits`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Deque, Iterable, Optional, Tuple, Type, TypeVar

from waitress.adjustments import Adjustments  # type: ignore[import-untyped]
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import TcpWSGIServer  # type: ignore[import-untyped]
from waitress.task import ErrorTask, ThreadedTaskDispatcher  # type: ignore[import-untyped]

from payq.errors import ConfigError, InvalidArgument

log = logging.getLogger("payq.serving")

_BUSY_ANSWER = (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n")


@dataclass(frozen=True)
class ServingLimits:
    """The bounds a payq HTTP server (inbox, dashboard, metrics) puts on
    its clients, so that slow or idle ones cannot hold it.

    ``timeout_s``: a client has this long to send each request whole,
    counted from when its connection was accepted or its previous answer
    was written; a connection idle, or sending (or reading its answer)
    slower than that, is closed. A client trickling one byte at a time is
    closed too: the deadline is not moved by each byte.
    ``connection_count_max``: connections open at once; one beyond it is
    answered 503 (``Retry-After: 1``) and closed at once.
    ``thread_count``: requests handled at once; the application runs on a
    fixed pool of this many threads and a complete request waits for a
    free one. Connections themselves hold no thread: one event loop reads
    and writes them all.
    """

    timeout_s: float = 30.0
    connection_count_max: int = 64
    thread_count: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not 0 < self.timeout_s <= 3600:
            raise InvalidArgument(f"timeout_s must be more than 0 and at most 3600, got {self.timeout_s!r}")
        if isinstance(self.connection_count_max, bool) or not isinstance(self.connection_count_max, int) \
                or not 1 <= self.connection_count_max <= 10_000:
            raise InvalidArgument(f"connection_count_max must be 1..10000, got {self.connection_count_max!r}")
        if isinstance(self.thread_count, bool) or not isinstance(self.thread_count, int) \
                or not 1 <= self.thread_count <= THREAD_COUNT_MAX:
            raise InvalidArgument(f"thread_count must be 1..{THREAD_COUNT_MAX}, got {self.thread_count!r}")


THREAD_COUNT_MAX = 256
# How often the event loop wakes without traffic, to close connections past
# their deadline and to notice a stop (seconds).
LOOP_WAKE_S = 0.25
# How long stop() waits for requests being handled to finish before it
# closes their connections anyway (seconds).
STOP_GRACE_S = 5.0
# A request head larger than this is refused (431 by waitress's parser).
HEAD_BYTES_MAX = 64 * 1024
# Refused connections waiting to be closed (see _Server._refuse_busy); when
# more are refused at once, the oldest is closed at once.
REFUSED_LINGER_COUNT_MAX = 256


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """A waitress connection with a deadline: ``deadline`` is when its next
    request must have arrived whole (see :attr:`ServingLimits.timeout_s`)."""

    deadline = 0.0
    # Set when waitress refused a request itself (see _refusing_task): the
    # client may still be sending a body nobody will read.
    linger_on_close = False

    def __init__(self, server: "_Server", sock: socket.socket, addr: Any, adj: Adjustments,
                 map: Any = None) -> None:  # noqa: A002 (waitress's name)
        self.deadline = time.monotonic() + server.limits.timeout_s
        super().__init__(server, sock, addr, adj, map=map)
        self.error_task_class = server.error_task_class

    def service(self) -> None:
        try:
            super().service()
        finally:
            # The answer is written; the next request has a fresh timeout.
            self.deadline = time.monotonic() + self.server.limits.timeout_s

    def del_channel(self, map: Any = None) -> None:  # noqa: A002 (waitress's name)
        # Every close passes here just before the socket is closed. Closing
        # with unread bytes would reset the connection and the client could
        # lose the refusal: the connection lives on a moment in a duplicate,
        # half closed, which the server drains and closes.
        if self.linger_on_close and self.socket is not None:
            self.linger_on_close = False
            try:
                self.server.linger(self.socket.dup())
            except OSError:
                pass
        super().del_channel(map)


class _Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with payq's :class:`ServingLimits`: the
    connection cap is answered 503 instead of leaving clients in the listen
    backlog, and the deadline of each connection is enforced."""

    channel_class = _Channel
    error_task_class: Type[ErrorTask] = ErrorTask
    limits = ServingLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Refused connections with when to close them, oldest first.
        self._refused: Deque[Tuple[socket.socket, float]] = deque()
        super().__init__(*args, **kwargs)

    def handle_accept(self) -> None:
        if len(self.active_channels) < self.limits.connection_count_max:
            super().handle_accept()
            return
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is not None:
            self._refuse_busy(accepted[0])

    def _refuse_busy(self, sock: socket.socket) -> None:
        # Written without waiting: a client that does not read its answer
        # cannot hold the event loop either. The socket is closed a moment
        # later, after what the client sent meanwhile is dropped: closing
        # with unread bytes would reset the connection, and the client could
        # lose the answer.
        try:
            sock.setblocking(False)
            sock.send(_BUSY_ANSWER)
        except OSError:
            pass
        self.linger(sock)

    def linger(self, sock: socket.socket) -> None:
        """Half-closes ``sock`` and closes it a moment later, after dropping
        what its client sent meanwhile (at most REFUSED_LINGER_COUNT_MAX wait)."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self._refused) >= REFUSED_LINGER_COUNT_MAX:
            _drop_and_close(self._refused.popleft()[0])
        self._refused.append((sock, time.monotonic() + LOOP_WAKE_S))

    def close_refused(self) -> None:
        """Closes every refused connection still lingering."""
        while self._refused:
            _drop_and_close(self._refused.popleft()[0])

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        while self._refused and self._refused[0][1] <= time.monotonic():
            _drop_and_close(self._refused.popleft()[0])
        # Channels whose request is being handled are left to the application
        # thread; every other one past its deadline is closed by the loop.
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            if not channel.requests and channel.deadline <= mono:
                channel.will_close = True


def _drop_and_close(sock: socket.socket) -> None:
    """Reads (without waiting, a bounded amount) and drops what a refused
    client sent, then closes its socket."""
    try:
        for _ in range(16):
            if not sock.recv(64 * 1024):
                break
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _QueueDepthLog:
    """Where waitress reports requests waiting for a thread: at debug
    level. Its own logger warns for each one, which under a burst floods
    the log (and stderr, where nothing configured logging) with what is the
    pool working as intended."""

    def warning(self, message: str, *args: Any) -> None:
        log.debug(message, *args)


class _Dispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """waitress's application threads, named after the server."""

    queue_logger = _QueueDepthLog()

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def start_new_thread(self, target: Callable[[int], None], thread_no: int) -> None:
        thread = threading.Thread(target=target, name=f"{self._name}-{thread_no}", args=(thread_no,), daemon=True)
        thread.start()


class WsgiServer:
    """Serves a WSGI application on ``host:port`` (port 0: any free port)
    with waitress, from a background thread, until :meth:`stop` or the end
    of a ``with``: HTTP/1.1 with keep-alive, the bounds of ``limits``
    (:class:`ServingLimits`; its defaults when None), request heads up to
    64 KiB and bodies up to ``body_bytes_max`` (413 beyond, before the body
    is read). It listens from construction on; ConfigError when it cannot.

    ``on_refused(status)`` is called for each request waitress answers
    itself because it is malformed (400), too large (413, 431) or otherwise
    not HTTP, before any application code runs; ``name`` names the threads.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], *, host: str = "127.0.0.1", port: int = 0,
                 limits: Optional[ServingLimits] = None, name: str = "payq-http",
                 body_bytes_max: int = 1024 * 1024, on_refused: Optional[Callable[[int], None]] = None) -> None:
        if limits is not None and not isinstance(limits, ServingLimits):
            raise InvalidArgument("limits must be a payq.ServingLimits")
        if not callable(app):
            raise InvalidArgument("app must be a WSGI application (a callable)")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be 0..65535, got {port!r}")
        self.limits = limits if limits is not None else ServingLimits()
        self._name = name
        self._dispatcher = _Dispatcher(name)
        self._server = listening(lambda: self._listen(app, host, port, body_bytes_max, on_refused), host, port)
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def _listen(self, app: Callable[..., Iterable[bytes]], host: str, port: int, body_bytes_max: int,
                on_refused: Optional[Callable[[int], None]]) -> _Server:
        family, socktype, proto, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0,
                                                                  socket.AI_PASSIVE)[0]
        adj = Adjustments(ident="payq", max_request_header_size=HEAD_BYTES_MAX,
                          max_request_body_size=body_bytes_max, expose_tracebacks=False,
                          # No proxy is trusted: X-Forwarded-* headers never reach
                          # the application (waitress 3's default, stated for 2.x).
                          clear_untrusted_proxy_headers=True,
                          # The cap is answered 503 by _Server first; waitress's
                          # own limit (which stops accepting) stays out of the way.
                          connection_limit=self.limits.connection_count_max + 16,
                          channel_timeout=max(1, int(self.limits.timeout_s)), threads=self.limits.thread_count)
        # Fractions of a second, which Adjustments' int parsing would drop.
        adj.cleanup_interval = LOOP_WAKE_S
        adj.asyncore_loop_timeout = LOOP_WAKE_S
        server_class = type("_BoundServer", (_Server,), {"limits": self.limits,
                                                          "error_task_class": _refusing_task(on_refused)})
        server: _Server = server_class(app, dispatcher=self._dispatcher, adj=adj,
                                       sockinfo=(family, socktype, proto, sockaddr), bind_socket=False, _start=False)
        try:
            server.bind_server_socket()
            server.effective_host, server.effective_port = server.getsockname()
            server.accept_connections()
        except OSError:
            # Nothing serves yet: the socket and the loop's wake-up pipe go now,
            # not whenever the garbage collector finds them.
            server.close()
            raise
        return server

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when given 0)."""
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        """The address listened on, numeric."""
        return str(self._server.effective_host)

    @property
    def url(self) -> str:
        """``http://host:port/`` (IPv6 hosts in brackets)."""
        host = self.host
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def connection_count(self) -> int:
        """Connections open now."""
        return len(self._server.active_channels)

    def start(self) -> "WsgiServer":
        """Serve from a background thread (a no-op while serving) and return ``self``."""
        if self._stopped:
            raise InvalidArgument("a stopped server cannot be started again; make a new one")
        if self._thread is None:
            self._dispatcher.set_thread_count(self.limits.thread_count)
            self._thread = threading.Thread(target=self._server.run, name=self._name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, let requests being handled finish (at most
        5 s), close every connection and the socket, and join the threads.
        Idempotent, and safe before :meth:`start`."""
        if self._stopped:
            return
        self._stopped = True
        thread, self._thread = self._thread, None
        if thread is None:
            self._close_all()
            return
        self._on_loop(self._close_listener)
        self._dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_S)
        self._on_loop(self._close_all)
        thread.join(STOP_GRACE_S)
        if thread.is_alive():  # the loop missed the trigger; it exits within a wake-up once the map is empty
            self._close_all()
            thread.join(STOP_GRACE_S)

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the serving loop's thread; here instead once the
        loop has ended, which closes its trigger (EBADF): nothing else
        touches the server then."""
        try:
            self._server.trigger.pull_trigger(action)
        except OSError:
            action()

    def _close_listener(self) -> None:
        if self._server.accepting:
            self._server.accepting = False
            self._server.del_channel()
            self._server.socket.close()

    def _close_all(self) -> None:
        self._close_listener()
        self._server.close_refused()
        for dispatcher in list(self._server._map.values()):
            try:
                dispatcher.close()
            except OSError:
                pass

    def __enter__(self) -> "WsgiServer":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()


def _refusing_task(on_refused: Optional[Callable[[int], None]]) -> Type[ErrorTask]:
    class RefusingTask(ErrorTask):  # type: ignore[misc]
        """waitress's answer to a request it refuses itself: counted, and
        its connection closed gently (see _Channel.del_channel)."""

        def execute(self) -> None:
            self.channel.linger_on_close = True
            if on_refused is not None:
                try:
                    on_refused(int(self.request.error.code))
                except Exception:  # noqa: BLE001 - a counter must not keep the answer from the client
                    log.exception("on_refused failed")
            super().execute()

    return RefusingTask


ServerT = TypeVar("ServerT")


def listening(make: Callable[[], ServerT], host: str, port: int) -> ServerT:
    """``make()``, the server bound to ``host:port``; ConfigError naming the
    address when it cannot listen there (in use, no such host, no right)."""
    try:
        return make()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
