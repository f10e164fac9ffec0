"""The ``payq`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional

import payq
from payq.embedded import EmbeddedServer

__all__ = ["main"]


def _say(text: str) -> None:
    print(text, flush=True)


def _connect(args: argparse.Namespace, migrate: Optional[bool] = None) -> payq.Database:
    return payq.connect(args.dsn, schema=args.schema, migrate=migrate)


def cmd_up(args: argparse.Namespace) -> int:
    server = EmbeddedServer(args.home)
    _say(f"starting the embedded PostgreSQL server in {server.home} ...")
    dsn = server.up()
    _say(f"running: {dsn}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    server = EmbeddedServer(args.home)
    server.down()
    _say(f"stopped the embedded server in {server.home}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = EmbeddedServer(args.home).status()
    if args.json:
        _say(json.dumps(status.__dict__, indent=2))
    else:
        state = "running" if status.running else ("stopped" if status.initialized else "not created")
        _say(f"embedded server: {state}")
        _say(f"  home:        {status.home}")
        _say(f"  dsn:         {status.dsn}")
        _say(f"  server user: {status.server_user}")
    return 0 if status.running else 3


def cmd_migrate(args: argparse.Namespace) -> int:
    db = _connect(args, migrate=False)
    report = db.migrate()
    if report.applied:
        _say(f"applied migrations {report.applied} to schema {db.schema!r}; now at version {report.version_current}")
    else:
        _say(f"schema {db.schema!r} is up to date at version {report.version_current}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    steps = 3
    _say(f"[1/{steps}] connecting (embedded PostgreSQL unless --dsn or PAYQ_DSN is given) ...")
    db = _connect(args, migrate=False)
    _say(f"      {db.dsn_source}: {db.dsn}")
    _say(f"[2/{steps}] migrating schema {db.schema!r} ...")
    report = db.migrate()
    _say(f"      applied {report.applied or 'nothing (up to date)'}; version {report.version_current}")
    _say(f"[3/{steps}] checking the server ...")
    with db.transaction() as t:
        ((version,),) = t.execute("SHOW server_version")
        ((zone,),) = t.execute("SELECT day_time_zone FROM @schema@.installation")
    elapsed_s = time.monotonic() - started
    _say("")
    _say("payq demo report")
    _say(f"  PostgreSQL:      {version}")
    _say(f"  schema version:  {report.version_current}")
    _say(f"  ledger day zone: {zone}")
    _say(f"  elapsed:         {elapsed_s:.2f} s")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    _say(f"payq {payq.__version__}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payq", description="payq: safe money-moving side effects on PostgreSQL")
    parser.add_argument("--dsn", default=None, help="libpq DSN (default: PAYQ_DSN, else the embedded server)")
    parser.add_argument("--schema", default="payq", help="schema holding payq's tables (default: payq)")
    parser.add_argument("--home", default=None, help="embedded server home (default: PAYQ_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: Dict[str, Callable[[argparse.Namespace], int]] = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "migrate": cmd_migrate,
        "demo": cmd_demo,
        "version": cmd_version,
    }
    helps = {
        "up": "start the embedded PostgreSQL server (create it if needed)",
        "down": "stop the embedded server (data is kept)",
        "status": "show the embedded server's state (exit 3 when not running)",
        "migrate": "apply missing schema migrations",
        "demo": "run the end-to-end demo on the embedded default",
        "version": "print payq's version",
    }
    for name, handler in commands.items():
        command = sub.add_parser(name, help=helps[name])
        command.set_defaults(handler=handler)
        if name == "status":
            command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except payq.Error as exc:
        print(f"payq: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("payq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
