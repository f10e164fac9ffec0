"""A throwaway primary with a synchronous standby, for failover tests.

::

    with ReplicatedCluster() as cluster:
        db = payq.connect(cluster.dsn, schema="t", migrate=True)   # host=primary,standby read-write
        ...
        cluster.primary_stop_immediate()    # the primary is gone, as after a crash
        cluster.standby_promote()           # the standby takes over; the DSN follows it

Both servers listen only on unix sockets in a private temp directory (no TCP
port to collide with anything), run as ``postgres`` when this process is
root, and are stopped and deleted when the block ends, after a failure or
Ctrl-C, and (through a watchdog process) when this process is killed.

Replication is synchronous (``synchronous_standby_names`` names the standby,
``synchronous_commit = on``): a COMMIT is acknowledged only once the standby
has flushed its WAL, so every acknowledged transaction survives the loss of
the primary. ``fsync = off`` on both servers, for speed: the data survives a
server process being killed (the operating system still holds it), not a
machine crash, which is all a test needs. The standby is configured to run
alone once promoted (``synchronous_standby_names = ''``): otherwise the new
primary would wait forever for a standby that no longer exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import List, Optional, Type

from payq.embedded import postgres_bin_dir

__all__ = ["ReplicatedCluster"]

SERVER_USER = "postgres"  # the server refuses to run as root
DATABASE_USER = "payq"
STANDBY_NAME = "standby1"
PRIMARY_PORT = 5432  # each server has a socket directory of its own
STANDBY_PORT = 5433
START_TIMEOUT_S = 60
SYNC_WAIT_S = 30.0
SYNC_POLL_S = 0.05
COMMAND_TIMEOUT_S = 120
CONNECT_TIMEOUT_S = 2

# Stops both servers and deletes the home once the parent is gone: its
# stdin is a pipe whose write end only the parent holds.
_WATCHDOG = r"""
import os, shutil, subprocess, sys
sys.stdin.read()
pg_ctl, home, wrap = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in ("primary", "standby"):
    data = os.path.join(home, name, "data")
    if os.path.exists(os.path.join(data, "PG_VERSION")):
        subprocess.run(wrap + [pg_ctl, "stop", "-w", "-m", "immediate", "-D", data],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
shutil.rmtree(home, ignore_errors=True)
"""


class ReplicatedCluster:
    """A primary and a synchronous standby under one temp directory.

    ``dsn`` names both servers (``target_session_attrs=read-write``), so a
    client follows a promotion. ``primary_dsn`` and ``standby_dsn`` reach
    one server each.
    """

    def __init__(self) -> None:
        # pg_ctl may be a symlink on PATH: pg_basebackup and psql sit next
        # to the real one.
        self._bin = os.path.dirname(os.path.realpath(os.path.join(postgres_bin_dir(), "pg_ctl")))
        self._as_server: List[str] = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        self.home = ""
        self._watchdog: Optional["subprocess.Popen[bytes]"] = None

    # ------------------------------------------------------------ where

    def _dir(self, name: str, part: str) -> str:
        return os.path.join(self.home, name, part)

    def _server_dsn(self, name: str, port: int, database: str = "postgres") -> str:
        return (f"host={self._dir(name, 'run')} port={port} user={DATABASE_USER} dbname={database} "
                f"connect_timeout={CONNECT_TIMEOUT_S}")

    @property
    def primary_dsn(self) -> str:
        """The primary alone."""
        return self._server_dsn("primary", PRIMARY_PORT)

    @property
    def standby_dsn(self) -> str:
        """The standby alone (read-only until promoted)."""
        return self._server_dsn("standby", STANDBY_PORT)

    @property
    def dsn(self) -> str:
        """Both servers, primary first; libpq picks the one that accepts writes."""
        return (f"host={self._dir('primary', 'run')},{self._dir('standby', 'run')} "
                f"port={PRIMARY_PORT},{STANDBY_PORT} user={DATABASE_USER} dbname=postgres "
                f"target_session_attrs=read-write connect_timeout={CONNECT_TIMEOUT_S}")

    # ------------------------------------------------------------ life cycle

    def start(self) -> "ReplicatedCluster":
        """Create and start the primary, clone it with pg_basebackup -R, start
        the standby, and return once the primary reports it synchronous."""
        if self.home:
            raise RuntimeError("this ReplicatedCluster was already started")
        self.home = tempfile.mkdtemp(prefix="payq-repl-", dir="/tmp")
        # As root the servers run as another user, who must reach the directory.
        os.chmod(self.home, 0o755)
        self._watchdog_start()
        for name in ("primary", "standby"):
            for part in ("run", "log"):
                self._mkdir_for_server(self._dir(name, part))
        self._primary_create()
        self._pg_ctl("start", "primary")
        self._standby_create()
        self._pg_ctl("start", "standby")
        self._synchronous_wait()
        return self

    def close(self) -> None:
        """Stop both servers (immediately: nothing in them is kept) and
        delete the directory. Idempotent."""
        if not self.home:
            return
        try:
            for name in ("primary", "standby"):
                if self.running(name):
                    self._run([os.path.join(self._bin, "pg_ctl"), "stop", "-w", "-m", "immediate", "-D",
                               self._dir(name, "data")], as_server=True, check=False)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
            if self._watchdog is not None and self._watchdog.stdin is not None:
                self._watchdog.stdin.close()  # the watchdog finds nothing left to do
                self._watchdog.wait(timeout=COMMAND_TIMEOUT_S)
            self.home = ""

    def __enter__(self) -> "ReplicatedCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    # ------------------------------------------------------------ failover

    def primary_stop_immediate(self) -> None:
        """Stop the primary in immediate mode: its processes quit without a
        checkpoint and cut every client off, as in a crash."""
        self._run([os.path.join(self._bin, "pg_ctl"), "stop", "-w", "-m", "immediate", "-D",
                   self._dir("primary", "data")], as_server=True)

    def standby_promote(self) -> None:
        """Promote the standby and return once it accepts writes."""
        self._run([os.path.join(self._bin, "pg_ctl"), "promote", "-w", "-t", str(START_TIMEOUT_S), "-D",
                   self._dir("standby", "data")], as_server=True)

    def standby_stop(self) -> None:
        """Stop the standby (fast mode)."""
        self._run([os.path.join(self._bin, "pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                   self._dir("standby", "data")], as_server=True)

    def standby_start(self) -> None:
        """Start the standby again (it reconnects to the primary)."""
        self._pg_ctl("start", "standby")

    def running(self, name: str) -> bool:
        """Whether server ``name`` (``primary`` or ``standby``) runs."""
        data = self._dir(name, "data")
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            return False
        status = self._run([os.path.join(self._bin, "pg_ctl"), "status", "-D", data], as_server=True, check=False)
        return status.returncode == 0

    def log_tail(self, name: str, line_count: int = 40) -> str:
        """The last lines of server ``name``'s log (for failure messages)."""
        try:
            with open(self._dir(name, "log") + "/server.log", encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-line_count:])
        except OSError as exc:
            return f"(no log: {exc})"

    def sql(self, name: str, query: str) -> str:
        """Run ``query`` on server ``name`` with psql; its unaligned output."""
        port = PRIMARY_PORT if name == "primary" else STANDBY_PORT
        return self._run([os.path.join(self._bin, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d",
                          self._server_dsn(name, port), "-c", query]).stdout.strip()

    # ------------------------------------------------------------ helpers

    def _primary_create(self) -> None:
        data = self._dir("primary", "data")
        self._mkdir_for_server(data, mode=0o700)
        self._run([os.path.join(self._bin, "initdb"), "-D", data, "-U", DATABASE_USER, "--auth=trust",
                   "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"], as_server=True)
        self._conf_append(os.path.join(data, "postgresql.conf"), [
            "listen_addresses = ''",
            f"unix_socket_directories = '{self._dir('primary', 'run')}'",
            "unix_socket_permissions = 0777",
            f"port = {PRIMARY_PORT}",
            "max_connections = 200",
            "timezone = 'UTC'",
            "wal_level = replica",
            "max_wal_senders = 5",
            "max_replication_slots = 5",
            f"synchronous_standby_names = '{STANDBY_NAME}'",
            "synchronous_commit = on",
            "fsync = off",  # a test cluster: survives a killed server, not a machine crash
            "logging_collector = off",
        ])

    def _standby_create(self) -> None:
        data = self._dir("standby", "data")
        self._mkdir_for_server(data, mode=0o700)
        self._run([os.path.join(self._bin, "pg_basebackup"), "-D", data, "-d",
                   self._server_dsn("primary", PRIMARY_PORT) + f" application_name={STANDBY_NAME}",
                   "-X", "stream", "-R", "-C", "-S", STANDBY_NAME, "-c", "fast", "--no-sync"], as_server=True)
        # postgresql.auto.conf overrides postgresql.conf, and its last line
        # wins: the standby's own socket and port, its name on the primary,
        # and no synchronous standby of its own once promoted.
        self._conf_append(os.path.join(data, "postgresql.auto.conf"), [
            f"unix_socket_directories = '{self._dir('standby', 'run')}'",
            f"port = {STANDBY_PORT}",
            f"primary_conninfo = '{self._server_dsn('primary', PRIMARY_PORT)} application_name={STANDBY_NAME}'",
            f"primary_slot_name = '{STANDBY_NAME}'",
            "synchronous_standby_names = ''",
        ])

    def _synchronous_wait(self) -> None:
        deadline = time.monotonic() + SYNC_WAIT_S
        query = f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        while time.monotonic() < deadline:
            if self.sql("primary", query) == "sync":
                return
            time.sleep(SYNC_POLL_S)
        raise RuntimeError(f"the standby did not become synchronous within {SYNC_WAIT_S} s:\n"
                           + self.log_tail("standby"))

    def _pg_ctl(self, action: str, name: str) -> None:
        self._run([os.path.join(self._bin, "pg_ctl"), action, "-w", "-t", str(START_TIMEOUT_S), "-D",
                   self._dir(name, "data"), "-l", os.path.join(self._dir(name, "log"), "server.log")],
                  as_server=True)

    def _conf_append(self, path: str, lines: List[str]) -> None:
        with open(path, "a", encoding="utf-8") as conf:
            conf.write("\n# written by payq.testing.replicated\n" + "\n".join(lines) + "\n")

    def _mkdir_for_server(self, path: str, mode: int = 0o755) -> None:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        if self._as_server:
            shutil.chown(os.path.dirname(path), SERVER_USER)
            shutil.chown(path, SERVER_USER)

    def _run(self, argv: List[str], *, as_server: bool = False,
             check: bool = True) -> "subprocess.CompletedProcess[str]":
        full = (self._as_server if as_server else []) + argv
        result = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=COMMAND_TIMEOUT_S, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}):\n{result.stdout}")
        return result

    def _watchdog_start(self) -> None:
        # Its own session: a Ctrl-C to this process group must not end it first.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, os.path.join(self._bin, "pg_ctl"), self.home, *self._as_server],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def __repr__(self) -> str:
        return f"<ReplicatedCluster home={self.home!r}>"
