"""A real pgbouncer in front of a test cluster: for testing code that runs
behind a connection pooler, as production payments systems do.

::

    with throwaway_cluster() as dsn, PgBouncer(dsn, pool_mode="transaction") as bouncer:
        db = payq.connect(bouncer.dsn, pooler="transaction", listen_dsn=dsn)

The pooler listens on a free loopback TCP port and reaches the server
through the server's own DSN (host, port, user, database); every client is
let in without a password (``auth_type = any``), which is for tests only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Dict, Optional, Type

from payq.errors import ConfigError

__all__ = ["PgBouncer", "pgbouncer_binary"]

_START_WAIT_S = 15.0
_STOP_WAIT_S = 10.0
# pgbouncer refuses to run as root; it runs as the server's user.
_RUN_AS = "postgres"


def pgbouncer_binary() -> Optional[str]:
    """The pgbouncer executable, if installed (Debian: /usr/sbin/pgbouncer)."""
    return shutil.which("pgbouncer") or (os.path.exists("/usr/sbin/pgbouncer") and "/usr/sbin/pgbouncer") or None


def _dsn_fields(dsn: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for part in dsn.split():
        name, _, value = part.partition("=")
        fields[name] = value
    return fields


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgBouncer:
    """pgbouncer in ``pool_mode`` ("transaction" or "session") in front of
    the server of ``server_dsn`` (a key=value DSN with host, port, user and
    dbname), with at most ``pool_size`` server connections. ``dsn`` is what
    clients connect to; the pooler and its files are gone after ``stop()``
    (or the ``with`` block), also after a failure."""

    def __init__(self, server_dsn: str, *, pool_mode: str = "transaction", pool_size: int = 8) -> None:
        if pool_mode not in ("transaction", "session"):
            raise ConfigError(f"pool_mode is 'transaction' or 'session', not {pool_mode!r}")
        binary = pgbouncer_binary()
        if binary is None:
            raise ConfigError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self._binary = binary
        self._server = _dsn_fields(server_dsn)
        self.pool_mode = pool_mode
        self._pool_size = pool_size
        self.port = _free_port()
        self._home = tempfile.mkdtemp(prefix="payq-pgbouncer-", dir="/tmp")
        self._process: Optional[subprocess.Popen[bytes]] = None

    @property
    def dsn(self) -> str:
        """The DSN clients use: the pooler's port, the server's user and database."""
        return (f"host=127.0.0.1 port={self.port} user={self._server.get('user', 'postgres')} "
                f"dbname={self._server.get('dbname', 'postgres')}")

    def _config(self) -> str:
        server = self._server
        database = server.get("dbname", "postgres")
        return "\n".join([
            "[databases]",
            f"{database} = host={server.get('host', '127.0.0.1')} port={server.get('port', '5432')} "
            f"user={server.get('user', 'postgres')} dbname={database}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self._home}",
            "auth_type = any",
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self._pool_size}",
            "max_client_conn = 500",
            # payq's own connections SET nothing when pooler="transaction";
            # these are what libpq and the drivers send at start-up.
            "ignore_startup_parameters = extra_float_digits,options",
            f"logfile = {self._home}/pgbouncer.log",
            f"pidfile = {self._home}/pgbouncer.pid",
            "",
        ])

    def start(self) -> "PgBouncer":
        """Start the pooler and wait until it accepts connections."""
        os.chmod(self._home, 0o755)
        config = os.path.join(self._home, "pgbouncer.ini")
        with open(config, "w", encoding="utf-8") as out:
            out.write(self._config())
        command = [self._binary, "-q", config]
        if os.geteuid() == 0:
            shutil.chown(self._home, _RUN_AS)
            shutil.chown(config, _RUN_AS)
            command = ["runuser", "-u", _RUN_AS, "--", *command]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + _START_WAIT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(f"pgbouncer exited at start: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"pgbouncer did not listen within {_START_WAIT_S:.0f} s: {self.log_tail()}")

    def log_tail(self, line_count: int = 20) -> str:
        """The last lines of the pooler's log, for a failure's message."""
        try:
            with open(os.path.join(self._home, "pgbouncer.log"), encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-line_count:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the pooler (its clients' connections break) and remove its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_WAIT_S)
        if process is not None and process.stderr is not None:
            process.stderr.close()  # else a ResourceWarning when it is collected
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> "PgBouncer":
        return self.start()

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        self.stop()
