"""The bounds every payq HTTP server (inbox, dashboard, metrics) puts on its
clients (payq/_serving.py, waitress underneath): slow, idle and half-sent
connections are closed after the timeout, at most ``connection_count_max``
are open at once, requests run on a fixed pool of ``thread_count`` threads,
HTTP/1.1 connections are kept for the next request, and real requests keep
being answered meanwhile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple
from urllib.parse import urlsplit

import pytest

import payq
import payq._serving as payq_serving
from payq.dashboard import DashboardServer
from payq.inbox import CallbackReceiver
from payq.metrics import MetricsServer

# Short, so the whole file stays within seconds: each server is tested for
# about three timeouts.
LIMITS = payq.ServingLimits(timeout_s=1.0, connection_count_max=12)
# How much later than the timeout a connection may be closed: the serving
# loop looks at deadlines every poll interval (0.5 s at most), on a busy machine.
CLOSE_SLACK_S = 3.0
# A real request's answer must come within this.
ANSWER_TIMEOUT_S = 5.0

# (name, server factory, the bytes of one real request, the status it gets)
Server = Tuple[str, Callable[[], Any], bytes, int]


def _hello_app(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


SERVERS: List[Server] = [
    ("inbox", lambda: CallbackReceiver(db=None, provider="fake", secret="s3cret").serve(limits=LIMITS),
     b"POST /callbacks HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", 401),  # unsigned: refused, no database needed
    ("metrics", lambda: MetricsServer(lambda: "up 1\n", limits=LIMITS),
     b"GET /metrics HTTP/1.0\r\n\r\n", 200),
    ("dashboard", lambda: DashboardServer(_hello_app, limits=LIMITS),
     b"GET / HTTP/1.0\r\n\r\n", 200),
]


def _address(server: Any) -> Tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _request(address: Tuple[str, int], request: bytes) -> int:
    """The status of one real request's answer."""
    with socket.create_connection(address, timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/"), answer
    return int(answer.split(b" ", 2)[1])


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes `sock` (EOF or reset) within `seconds`;
    whatever it sends before closing is ignored."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
    return False


@contextmanager
def _trickling(address: Tuple[str, int]) -> Iterator[socket.socket]:
    """A connection that sends its request head one byte every 0.3 s, well
    within each read's timeout, for as long as the server lets it."""
    sock = socket.create_connection(address)
    stop = threading.Event()

    def trickle() -> None:
        for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.3):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sock
    finally:
        stop.set()
        thread.join()
        sock.close()


@pytest.mark.parametrize("name,make,request_bytes,status", SERVERS, ids=[s[0] for s in SERVERS])
def test_slow_clients_are_closed_after_the_timeout_and_real_requests_are_answered(
        name: str, make: Callable[[], Any], request_bytes: bytes, status: int) -> None:
    with make() as server, ExitStack() as stack:
        address = _address(server)
        slow: List[socket.socket] = []
        for _ in range(5):  # idle: connected, nothing sent
            slow.append(stack.enter_context(socket.create_connection(address)))
        for _ in range(3):  # half a request head
            sock = stack.enter_context(socket.create_connection(address))
            sock.sendall(request_bytes[: len(request_bytes) // 2])
            slow.append(sock)
        # A head that promises a body, then half of it.
        sock = stack.enter_context(socket.create_connection(address))
        sock.sendall(b"POST /metrics HTTP/1.0\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        slow.append(sock)
        slow.append(stack.enter_context(_trickling(address)))
        opened = time.monotonic()

        for _ in range(5):  # served by the free connections meanwhile
            assert _request(address, request_bytes) == status
        for sock in slow:
            assert _closed_within(sock, opened + LIMITS.timeout_s + CLOSE_SLACK_S - time.monotonic()), name
        assert time.monotonic() - opened >= LIMITS.timeout_s * 0.9  # closed by the timeout, not before
        assert _request(address, request_bytes) == status


@pytest.mark.parametrize("name,make,request_bytes,status", SERVERS, ids=[s[0] for s in SERVERS])
def test_connections_beyond_the_cap_are_answered_503_without_a_thread(
        name: str, make: Callable[[], Any], request_bytes: bytes, status: int) -> None:
    threads_before = threading.active_count()
    with make() as server, ExitStack() as stack:
        address = _address(server)
        idle = [stack.enter_context(socket.create_connection(address)) for _ in range(LIMITS.connection_count_max)]
        # Each idle connection has its thread once the serving loop took it.
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while server._server.connection_count() < LIMITS.connection_count_max and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server._server.connection_count() == LIMITS.connection_count_max
        threads_full = threading.active_count()
        # A crowd of slow clients at once: each is answered 503 and closed
        # by the serving loop itself, none gets a thread.
        crowd = [stack.enter_context(socket.create_connection(address)) for _ in range(100)]
        assert threading.active_count() <= threads_full
        for sock in crowd:
            sock.settimeout(ANSWER_TIMEOUT_S)
            assert sock.recv(65536).startswith(b"HTTP/1.0 503 "), name
            assert _closed_within(sock, ANSWER_TIMEOUT_S)
        assert _request(address, request_bytes) == 503, name
        assert threading.active_count() <= threads_full
        for sock in idle:
            assert _closed_within(sock, LIMITS.timeout_s + CLOSE_SLACK_S)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while server._server.connection_count() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _request(address, request_bytes) == status
    assert threading.active_count() <= threads_before + 1  # at most a thread still ending


def test_limits_are_checked() -> None:
    for bad in ({"timeout_s": 0}, {"timeout_s": -1.0}, {"timeout_s": "5"}, {"connection_count_max": 0},
                {"connection_count_max": 1.5}, {"connection_count_max": True}, {"timeout_s": float("nan")}):
        with pytest.raises(payq.InvalidArgument):
            payq.ServingLimits(**bad)  # type: ignore[arg-type]
    with pytest.raises(payq.InvalidArgument):
        MetricsServer(lambda: "", limits={"timeout_s": 1})  # type: ignore[arg-type]


def test_an_address_in_use_is_a_config_error_not_a_traceback(payq_db: payq.Database) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for make in (lambda: MetricsServer(lambda: "", port=port), lambda: DashboardServer(_hello_app, port=port),
                     lambda: CallbackReceiver(db=None, provider="fake", secret="s").serve(port=port)):
            with pytest.raises(payq.ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
                make()
        for command in (["dashboard", "--port", str(port)], ["worker", "--app", "payq", "--metrics-port", str(port)]):
            done = subprocess.run([sys.executable, "-m", "payq", "--dsn", payq_db.dsn, "--schema", payq_db.schema,
                                   *command], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PAYQ_DASHBOARD_TOKEN": "t" * 32})
            assert done.returncode == 2, (command, done.stderr)
            assert "Traceback" not in done.stderr and f"cannot listen on 127.0.0.1:{port}" in done.stderr


def _read_answer(sock: socket.socket) -> Tuple[bytes, bytes]:
    """One HTTP answer (status line and headers, body by its Content-Length)
    read from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def test_http11_keeps_the_connection_for_the_next_request_with_a_fresh_timeout() -> None:
    with DashboardServer(_hello_app, limits=LIMITS) as server:
        with socket.create_connection(_address(server), timeout=ANSWER_TIMEOUT_S) as sock:
            for _ in range(3):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: payq\r\n\r\n")
                head, body = _read_answer(sock)
                assert head.startswith(b"HTTP/1.1 200 ") and body == b"ok"
            # Idle after its last answer: closed by the timeout all the same.
            assert _closed_within(sock, LIMITS.timeout_s + CLOSE_SLACK_S)


def test_requests_run_on_a_fixed_pool_of_threads() -> None:
    """More requests than threads at once: at most ``thread_count`` run the
    application at a time, the others wait for a free thread, and all are
    answered."""
    limits = payq.ServingLimits(timeout_s=30.0, connection_count_max=20, thread_count=3)
    lock = threading.Lock()
    release = threading.Event()
    running = [0]
    running_max = [0]
    entered = threading.Semaphore(0)

    def blocking_app(environ: Any, start_response: Any) -> Iterable[bytes]:
        with lock:
            running[0] += 1
            running_max[0] = max(running_max[0], running[0])
        entered.release()
        release.wait(ANSWER_TIMEOUT_S * 4)
        with lock:
            running[0] -= 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    threads_before = threading.active_count()
    statuses: List[int] = []
    with payq_serving.WsgiServer(blocking_app, limits=limits, name="pool-test") as server:
        address = (server.host, server.port)
        clients = [threading.Thread(target=lambda: statuses.append(_request(address, b"GET / HTTP/1.0\r\n\r\n")))
                   for _ in range(10)]
        for client in clients:
            client.start()
        for _ in range(limits.thread_count):  # the pool is busy...
            assert entered.acquire(timeout=ANSWER_TIMEOUT_S)
        assert threading.active_count() <= threads_before + 1 + limits.thread_count + len(clients)
        release.set()  # ... and every request is answered once it frees up
        for client in clients:
            client.join(ANSWER_TIMEOUT_S * 4)
    assert statuses == [200] * 10
    assert running_max[0] == limits.thread_count
    assert threading.active_count() <= threads_before + 1


def test_wsgi_server_life_cycle() -> None:
    server = payq_serving.WsgiServer(_hello_app, limits=LIMITS, name="cycle-test")
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
    server.stop()  # before start: closes the socket
    server.stop()  # idempotent
    with pytest.raises(payq.InvalidArgument):
        server.start()
    with payq_serving.WsgiServer(_hello_app, host="::1", limits=LIMITS) as v6:
        assert v6.url == f"http://[::1]:{v6.port}/"
        assert _request(("::1", v6.port), b"GET / HTTP/1.0\r\n\r\n") == 200
    for bad in ({"app": None}, {"port": -1}, {"port": 70000}, {"limits": {"timeout_s": 1}}):
        arguments: Dict[str, Any] = {"app": _hello_app, **bad}
        with pytest.raises(payq.InvalidArgument):
            payq_serving.WsgiServer(arguments.pop("app"), **arguments)
    for bad_count in (0, 257, 1.5, True):
        with pytest.raises(payq.InvalidArgument):
            payq.ServingLimits(thread_count=bad_count)  # type: ignore[arg-type]
