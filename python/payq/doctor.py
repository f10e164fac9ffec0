"""``payq doctor``: what a user runs when something is wrong.

It looks, and changes nothing: it never starts the embedded server, never
migrates, never takes a lease. Each finding is a :class:`Check` with a
status: ``ok``; ``info`` (worth knowing); ``warn`` (may be intended, such as
a paused queue); ``fail`` (payq cannot work correctly this way). The
command's exit status is 1 when any check failed, else 0.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import payq
from payq._native import core
from payq.database import dsn_masked
from payq.embedded import EmbeddedServer
from payq.errors import Error

__all__ = ["Check", "DoctorReport", "diagnose", "render"]

#: Host and server clocks further apart than this (after allowing for the
#: round trip) are reported: leases and schedules are computed on the
#: server, but handlers' deadlines and logs use the host's clock.
CLOCK_SKEW_SECONDS_MAX = 2.0
#: Queues named in one check's detail; the JSON carries them all.
QUEUES_NAMED_MAX = 10
_CONNECT_TIMEOUT_S = 5

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One finding of :func:`diagnose`."""

    name: str
    status: str
    detail: str
    data: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorReport:
    """Every finding, in the order they were made."""

    checks: List[Check]

    @property
    def ok(self) -> bool:
        """False when any check failed (warnings do not count)."""
        return all(check.status != FAIL for check in self.checks)

    def check(self, name: str) -> Check:
        """The check called ``name``; KeyError if it was not made."""
        for found in self.checks:
            if found.name == name:
                return found
        raise KeyError(name)

    def as_json(self) -> Dict[str, Any]:
        """The report as plain data (``payq doctor --json``)."""
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


def _versions() -> Check:
    versions = dict(core.library_versions())
    versions["payq_python"] = payq.__version__
    detail = (f"payq {versions['payq']}, libpqxx {versions['libpqxx']}, libpq {versions['libpq']}, "
              f"libcurl {versions['libcurl']} ({versions['libcurl_ssl']})")
    return Check("versions", OK, detail, versions)


def _ca_bundle(versions: Dict[str, Any]) -> Check:
    # A wheel's libcurl was built on Debian and looks for Debian's bundle;
    # elsewhere payq falls back to where the distribution keeps its own.
    built_in = str(versions.get("libcurl_ca_file") or "")
    used = str(versions.get("ca_bundle") or "")
    data = {"libcurl_ca_file": built_in, "ca_bundle": used}
    if not used:
        return Check("ca_bundle", WARN, f"no CA bundle found (libcurl's own: {built_in or 'none'}): https handlers "
                                       "fail to verify unless given ca_file; install ca-certificates", data)
    if used == built_in:
        return Check("ca_bundle", OK, f"https calls verify against {used}", data)
    return Check("ca_bundle", OK, f"https calls verify against {used} (libcurl's own {built_in or 'none'} "
                                  "is not on this system)", data)


def _dsn_origin(dsn: Optional[str]) -> Tuple[str, Optional[str]]:
    """(source, dsn) the way payq.connect() resolves it; dsn None: embedded."""
    if dsn:
        return "argument", dsn
    env = os.environ.get("PAYQ_DSN")
    if env:
        return "environment", env
    return "embedded", None


def _embedded(home: Optional[str]) -> Tuple[Check, Optional[str]]:
    try:
        status = EmbeddedServer(home).status()
    except Error as exc:
        return Check("embedded", FAIL, f"embedded server unusable: {exc}", {}), None
    data = {"home": status.home, "running": status.running, "initialized": status.initialized,
            "binaries": status.binaries, "binaries_source": status.binaries_source}
    where = f"PostgreSQL from {status.binaries_source or 'nowhere'}: {status.binaries or 'none found'}"
    if status.running:
        return Check("embedded", OK, f"embedded server running in {status.home} ({where})", data), status.dsn
    state = "stopped" if status.initialized else "not created"
    return Check("embedded", FAIL, f"embedded server {state} in {status.home} ({where}): run payq up", data), None


def _dsn_port(dsn: str) -> Optional[int]:
    """The port a DSN names (key=value or URI), else PGPORT, else 5432;
    None for a multi-host DSN, whose hosts may listen on different ports."""
    text: Optional[str] = None
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        netloc = re.split(r"[/?]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
        if "," in netloc:
            return None
        found = re.search(r":([0-9]+)$", netloc) or re.search(r"[?&]port=([0-9]+)", rest)
        text = found.group(1) if found else None
    else:
        if re.search(r"(?:^|\s)host\s*=\s*'?[^\s']*,", dsn):
            return None
        found = re.search(r"(?:^|\s)port\s*=\s*'?([^\s']+)", dsn)
        text = found.group(1) if found else None
    text = text or os.environ.get("PGPORT") or "5432"
    return int(text) if text.isdigit() else None


def _one(db: payq.Database, sql: str) -> List[Optional[str]]:
    with db.transaction() as tx:
        rows = tx.execute(sql)
    return list(rows[0]) if rows else []


def _all(db: payq.Database, sql: str) -> List[List[Optional[str]]]:
    with db.transaction() as tx:
        return [list(row) for row in tx.execute(sql)]


def _schema(db: payq.Database) -> Check:
    version = db.schema_version()
    known = max(number for number, _ in core.migrations_known())
    data = {"version": version, "version_known": known, "schema": db.schema}
    if version == known:
        return Check("schema", OK, f"schema {db.schema} at version {version}, current", data)
    if version == 0:
        return Check("schema", FAIL, f"schema {db.schema} is not migrated: run payq migrate", data)
    if version < known:
        return Check("schema", FAIL, f"schema {db.schema} at version {version}, this payq knows {known}: "
                                     "run payq migrate", data)
    return Check("schema", FAIL, f"schema {db.schema} at version {version} is newer than this payq "
                                 f"(knows {known}): upgrade payq", data)


def _durability(db: payq.Database) -> List[Check]:
    fsync, synchronous_commit = _one(db, "SELECT current_setting('fsync'), current_setting('synchronous_commit')")
    checks = []
    if fsync == "on":
        checks.append(Check("fsync", OK, "fsync = on", {"value": fsync}))
    else:
        checks.append(Check("fsync", FAIL, f"fsync = {fsync}: a server crash can corrupt the ledger; "
                                           "only throwaway test clusters may run so", {"value": fsync}))
    if synchronous_commit in ("on", "remote_write", "remote_apply"):
        checks.append(Check("synchronous_commit", OK, f"synchronous_commit = {synchronous_commit}",
                            {"value": synchronous_commit}))
    else:
        checks.append(Check("synchronous_commit", WARN,
                            f"synchronous_commit = {synchronous_commit}: a commit payq reported may vanish "
                            "in a server crash (a payment sent, its record gone)", {"value": synchronous_commit}))
    return checks


def _pooler(db: payq.Database, dsn: str) -> Check:
    server_port = int(_one(db, "SELECT current_setting('port')")[0] or 0)
    dsn_port = _dsn_port(dsn)
    data = {"configured": db.pooler, "server_port": server_port, "dsn_port": dsn_port}
    # A pooler listens on a port of its own (pgbouncer: 6432) and forwards
    # to the server's; payq then sees a server port its DSN did not name.
    between = dsn_port is not None and dsn_port != server_port
    data["detected"] = between
    if not between:
        if db.pooler == "transaction":
            return Check("pooler", INFO, "pooler=transaction configured; none detected (the DSN names the "
                                         "server's own port)", data)
        return Check("pooler", OK, "no pooler in the way (the DSN names the server's own port)", data)
    if db.pooler == "transaction":
        return Check("pooler", OK, f"a pooler is in the way (DSN port {dsn_port}, server port {server_port}), "
                                   "and payq is configured for it (pooler=transaction)", data)
    return Check("pooler", WARN, f"something forwards payq's connections (DSN port {dsn_port}, server port "
                                 f"{server_port}): behind a transaction-mode pooler set PAYQ_POOLER=transaction; "
                                 "a session-mode pooler needs nothing", data)


def _clock(db: payq.Database) -> Check:
    before = time.time()
    server = float(_one(db, "SELECT extract(epoch FROM clock_timestamp())")[0] or 0.0)
    after = time.time()
    # The server read its clock somewhere within the round trip.
    skew = server - (before + after) / 2
    uncertainty = (after - before) / 2
    data = {"skew_seconds": round(skew, 3), "uncertainty_seconds": round(uncertainty, 3)}
    text = f"server clock {'ahead of' if skew >= 0 else 'behind'} this host by {abs(skew):.3f} s (±{uncertainty:.3f})"
    if abs(skew) - uncertainty > CLOCK_SKEW_SECONDS_MAX:
        return Check("clock_skew", WARN, text + ": synchronise the clocks (NTP)", data)
    return Check("clock_skew", OK, text, data)


def _workers(db: payq.Database) -> Check:
    lease = _all(db, "SELECT holder, extract(epoch FROM now() - acquired_at)::bigint, expires_at > now() "
                     "FROM @schema@.maintenance_lease")
    due, stuck = _one(db, "SELECT count(*) FILTER (WHERE state = 'pending' AND run_at <= now()), "
                          "count(*) FILTER (WHERE state = 'running' AND lease_until < now()) FROM @schema@.task")
    data: Dict[str, Any] = {"tasks_due": int(due or 0), "tasks_lease_expired": int(stuck or 0)}
    # The maintenance leader renews this lease at every tick: a live one
    # means at least one worker is running against this schema.
    if lease and lease[0][2] == "t":
        data.update(holder=lease[0][0], held_seconds=int(lease[0][1] or 0))
        return Check("workers", OK, f"worker heartbeat seen: {lease[0][0]} holds the maintenance lease", data)
    if lease:
        data.update(holder=lease[0][0])
    last = f" (last: {lease[0][0]})" if lease else ""
    if data["tasks_due"] or data["tasks_lease_expired"]:
        return Check("workers", WARN, f"no worker heartbeat{last}, and {data['tasks_due']} task(s) are due, "
                                      f"{data['tasks_lease_expired']} running past their lease: start payq worker",
                     data)
    return Check("workers", INFO, f"no worker heartbeat{last}; no task is waiting", data)


def _queues(db: payq.Database) -> Check:
    rows = _all(db, "SELECT name, paused, paused_until FROM @schema@.queue "
                    "WHERE paused OR paused_until > now() ORDER BY name")
    paused = [{"queue": name, "paused": flag == "t", "paused_until": until} for name, flag, until in rows]
    if not paused:
        return Check("queues", OK, "no queue is paused", {"paused": []})
    named = ", ".join(
        str(q["queue"]) + ("" if q["paused"] else f" (until {q['paused_until']}, provider back-pressure)")
        for q in paused[:QUEUES_NAMED_MAX])
    more = f" and {len(paused) - QUEUES_NAMED_MAX} more" if len(paused) > QUEUES_NAMED_MAX else ""
    return Check("queues", WARN, f"{len(paused)} queue(s) paused: {named}{more} (payq queues resume NAME)",
                 {"paused": paused})


def diagnose(dsn: Optional[str] = None, *, schema: str = "payq", home: Optional[str] = None) -> DoctorReport:
    """Look at payq's set-up the way :func:`payq.connect` would use it
    (``dsn``, else ``PAYQ_DSN``, else the embedded server under ``home``)
    and report what is wrong. Starts, migrates and writes nothing."""
    checks = [_versions()]
    checks.append(_ca_bundle(checks[0].data))
    source, resolved = _dsn_origin(dsn)
    if source == "embedded":
        embedded, resolved = _embedded(home)
        checks.append(embedded)
    where = {"argument": "given with --dsn", "environment": "from PAYQ_DSN",
             "embedded": "the embedded server (no --dsn, no PAYQ_DSN)"}[source]
    shown = dsn_masked(resolved) if resolved else "none"
    checks.append(Check("dsn", OK if resolved else FAIL, f"{shown} ({where})", {"source": source, "dsn": shown}))
    if resolved is None:
        return DoctorReport(checks)
    try:
        # connect_timeout bounds the wait on an unreachable host; a DSN
        # that names its own wins (libpq keeps the last value given).
        db = payq.connect(f"connect_timeout={_CONNECT_TIMEOUT_S} {resolved}" if "://" not in resolved
                          else resolved, schema=schema, migrate=False)
        version = _one(db, "SHOW server_version")[0]
    except Error as exc:
        checks.append(Check("server", FAIL, f"server not reachable: {type(exc).__name__}: {exc}", {}))
        return DoctorReport(checks)
    checks[0].data["server"] = version
    checks.append(Check("server", OK, f"server reachable: PostgreSQL {version}", {"version": version}))
    report_schema = _schema(db)
    checks.append(report_schema)
    checks.extend(_durability(db))
    checks.append(_pooler(db, resolved))
    checks.append(_clock(db))
    if report_schema.status != OK:
        # The tables the last two checks read may not be there yet.
        checks.append(Check("workers", INFO, "not checked: the schema is not current", {}))
        return DoctorReport(checks)
    checks.append(_workers(db))
    checks.append(_queues(db))
    return DoctorReport(checks)


_MARKS = {OK: "ok  ", INFO: "info", WARN: "WARN", FAIL: "FAIL"}


def render(report: DoctorReport) -> str:
    """The report as lines for a terminal."""
    lines = [f"[{_MARKS[check.status]}] {check.name:<18} {check.detail}" for check in report.checks]
    lines.append("payq doctor: " + ("nothing wrong found" if report.ok else "problems found (FAIL above)"))
    return "\n".join(lines)


def cmd_doctor(args: Any) -> int:
    """``payq doctor [--json]``: exit 1 when a check failed, else 0."""
    report = diagnose(args.dsn, schema=args.schema, home=args.home)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render(report))
    return 0 if report.ok else 1
