"""Headless Chromium for tests, driven over the Chrome DevTools Protocol
with the standard library only: a minimal WebSocket client (RFC 6455,
client side, text frames) and a browser that starts with a fresh profile
and is always killed, its profile deleted, when the ``with`` block ends.

    with Chromium() as browser:
        page = browser.page
        page.navigate("http://127.0.0.1:8080/")
        page.wait_for("document.title.includes('Overview')")
        page.evaluate("document.querySelector('button').click()")
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Dict, List, Optional, Type
from urllib.parse import urlsplit

__all__ = ["chromium_binary", "Chromium", "Page", "WebSocket", "CdpError"]

START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0
WAIT_TIMEOUT_S = 60.0
POLL_S = 0.1
EVENTS_KEPT_MAX = 2000
FRAME_BYTES_MAX = 64 * 1024 * 1024
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--no-default-browser-check", "--remote-debugging-port=0",
    # A desktop operator's window: layout tests measure against it.
    "--window-size=1600,1000",
]


class CdpError(Exception):
    """A DevTools command failed, or the browser did not do what was awaited."""


def chromium_binary() -> Optional[str]:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    """A client WebSocket for text messages; enough for DevTools."""

    def __init__(self, url: str, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None or parts.port is None:
            raise ValueError(f"not a ws://host:port/ URL: {url}")
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        self._reader: BinaryIO = self._sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        # No Origin header: Chromium refuses DevTools connections from web origins.
        request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self._sock.sendall(request.encode())
        status = self._reader.readline().decode("latin-1")
        headers: Dict[str, str] = {}
        while True:
            line = self._reader.readline().decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode()).digest()).decode()
        if " 101 " not in status or headers.get("sec-websocket-accept") != expected:
            self.close()
            raise CdpError(f"WebSocket handshake refused: {status.strip()}")

    def _read_exact(self, count: int) -> bytes:
        data = self._reader.read(count)
        if data is None or len(data) != count:
            raise ConnectionError("the WebSocket closed")
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += length.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += length.to_bytes(8, "big")
        mask = os.urandom(4)  # clients must mask every frame
        header += mask
        self._sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def receive(self) -> str:
        """The next text message (fragments joined; pings answered)."""
        message = bytearray()
        while True:
            first, second = self._read_exact(2)
            opcode, final = first & 0x0F, bool(first & 0x80)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read_exact(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read_exact(8), "big")
            if length > FRAME_BYTES_MAX:
                raise CdpError(f"a WebSocket frame of {length} bytes")
            mask = self._read_exact(4) if second & 0x80 else b""
            payload = self._read_exact(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("the browser closed the WebSocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x1, 0x0, 0x2):
                message += payload
                if final:
                    return message.decode("utf-8")
            # 0xA (pong) and anything else: ignored.

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self._reader.close()
        self._sock.close()


class Page:
    """One page (tab) of the browser: DevTools commands and polling waits."""

    def __init__(self, websocket_url: str) -> None:
        self._socket = WebSocket(websocket_url)
        self._ids = itertools.count(1)
        self.events: List[Dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> Dict[str, Any]:
        """Run one command and return its result; events that arrive in the
        meantime are kept in :attr:`events`."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.receive())
            if message.get("id") == command_id:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)
                del self.events[:-EVENTS_KEPT_MAX]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"{expression!r} threw: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")

    def wait_for(self, expression: str, what: str, timeout_s: float = WAIT_TIMEOUT_S) -> Any:
        """Poll ``expression`` until it is truthy. While a navigation
        replaces the document, evaluation may fail: that counts as not yet."""
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except CdpError as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                raise CdpError(f"timed out after {timeout_s:.0f} s waiting for {what} ({expression}); "
                               f"page: {self.describe()}; last error: {last_error or '-'}")
            time.sleep(POLL_S)

    def describe(self) -> str:
        """Where the page is and what it says, for a failure message."""
        try:
            return str(self.evaluate("location.href + ' :: ' + (document.body ? document.body.innerText : '')"
                                     ".slice(0, 1500)"))
        except (CdpError, OSError) as exc:
            return f"(unavailable: {exc})"

    def exceptions(self) -> List[str]:
        """Uncaught script exceptions reported since ``Runtime.enable``."""
        return [json.dumps(e.get("params", {}).get("exceptionDetails", {}))[:500]
                for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def close(self) -> None:
        self._socket.close()


class Chromium:
    """Headless Chromium with a fresh profile, as a context manager: on
    exit, however the block ended, the browser's whole process group is
    killed and the profile deleted."""

    def __init__(self, binary: Optional[str] = None) -> None:
        found = binary or chromium_binary()
        if found is None:
            raise CdpError("no chromium on PATH (Debian: apt-get install chromium)")
        self._binary = found
        self._home: Optional[Path] = None
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._page: Optional[Page] = None

    @property
    def page(self) -> Page:
        assert self._page is not None, "use Chromium() in a with block"
        return self._page

    def __enter__(self) -> "Chromium":
        self._home = Path(tempfile.mkdtemp(prefix="payq-chromium-"))
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._stop()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of Chromium's stderr, for a failure message."""
        if self._home is None:
            return ""
        try:
            return (self._home / "chromium.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _start(self) -> None:
        assert self._home is not None
        profile = self._home / "profile"
        profile.mkdir()
        with open(self._home / "chromium.log", "wb") as log:
            # A session of its own, so that stopping kills its helpers too.
            self._process = subprocess.Popen(
                [self._binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise CdpError(f"chromium exited with {self._process.returncode}: {self.log_tail()}")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            if len(lines) >= 2:
                break
            if time.monotonic() > deadline:
                raise CdpError(f"chromium did not open its DevTools port: {self.log_tail()}")
            time.sleep(POLL_S)
        port = int(lines[0])
        page_url = None
        while page_url is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=COMMAND_TIMEOUT_S) as answer:
                targets = json.load(answer)
            page_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            if page_url is None:
                if time.monotonic() > deadline:
                    raise CdpError(f"chromium has no page target: {targets}")
                time.sleep(POLL_S)
        self._page = Page(page_url)
        self._page.send("Page.enable")
        self._page.send("Runtime.enable")

    def _stop(self) -> None:
        if self._page is not None:
            try:
                self._page.close()
            except OSError:
                pass
            self._page = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # Its process group is the session started for it above.
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # helpers left behind by a clean exit
            except ProcessLookupError:
                pass
            process.wait()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
