"""A ``socketserver`` served from a daemon thread: the start/stop life
cycle that the metrics, dashboard and callback servers share."""

from __future__ import annotations

import socketserver
import threading
from typing import Optional


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
