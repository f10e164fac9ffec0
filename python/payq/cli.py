"""The ``payq`` command line.

Exit status: 0 done; 1 a check found a problem (``ledger audit``); 2 payq
refused the request (a typed ``payq.Error``: bad input, wrong state, unknown
task); 3 the embedded server is not running (``status``); 64 bad usage;
69 the database cannot be reached. Every listing prints a table, or JSON
with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import timedelta
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

import payq
from payq.database import dsn_masked
from payq.embedded import EmbeddedServer

__all__ = ["main"]

EXIT_PROBLEM_FOUND = 1
EXIT_REFUSED = 2
EXIT_NOT_RUNNING = 3
EXIT_USAGE = 64
EXIT_UNAVAILABLE = 69
# sysexits' EX_SOFTWARE: a worker thread hit a broken invariant and the
# worker stopped itself; a supervisor should restart it and alert.
EXIT_WORKER_FAILED = 70

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
                   "h": timedelta(hours=1), "d": timedelta(days=1)}


def _duration(text: str) -> timedelta:
    """``500ms``, ``30s``, ``10m``, ``2h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 500ms, 30s, 10m, 2h or 7d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _rate(text: str) -> Tuple[int, timedelta]:
    """``10/1s``: at most 10 starts per second."""
    count, _, window = text.partition("/")
    if not count.isdigit() or not window:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate like 10/1s or 600/1h")
    return int(count), _duration(window)


def _amount_limit(text: str) -> Tuple[payq.Money, timedelta]:
    """``50000.00CNY/1h``: at most that much money started per window."""
    money, _, window = text.partition("/")
    match = re.match(r"^([0-9]+(?:\.[0-9]+)?)([A-Z][A-Z0-9_]{2,11})$", money.strip())
    if not match or not window:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount limit like 50000.00CNY/1h")
    try:
        return payq.Money(match.group(1), match.group(2)), _duration(window)
    except payq.Error as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _count(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an int from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _queue_weights(text: str) -> List[Tuple[str, int]]:
    """``payouts:3,sms``: queues, each with an optional weight."""
    queues = []
    for item in text.split(","):
        name, _, weight = item.partition(":")
        if weight and not weight.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not a queue like name or name:weight")
        queues.append((name.strip(), int(weight) if weight else 1))
    return queues


def _json_out(value: Any) -> None:
    _say(json.dumps(value, indent=2, sort_keys=True, default=str))


def _say(text: str) -> None:
    print(text, flush=True)


def _connect(args: argparse.Namespace, migrate: Optional[bool] = None) -> payq.Database:
    return payq.connect(args.dsn, schema=args.schema, migrate=migrate, read_dsn=getattr(args, "read_dsn", None))


def _reader(db: payq.Database) -> payq.Database:
    """Where a read-only command reads: the standby of --read-dsn, if any,
    said on stderr with its lag (stdout stays the answer)."""
    if db.reader is not db:
        lag = db.replication_lag()
        print(f"reading from a standby ({'not in recovery' if lag is None else f'lag {lag.total_seconds():.1f} s'})",
              file=sys.stderr)
    return db.reader


def cmd_up(args: argparse.Namespace) -> int:
    server = EmbeddedServer(args.home)
    _say(f"starting the embedded PostgreSQL server in {server.home} ...")
    dsn = server.up()
    _say(f"running: {dsn_masked(dsn)}")
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
        _say(f"  dsn:         {dsn_masked(status.dsn)}")
        _say(f"  server user: {status.server_user}")
    return 0 if status.running else EXIT_NOT_RUNNING


def cmd_migrate(args: argparse.Namespace) -> int:
    db = _connect(args, migrate=False)
    report = db.migrate()
    if report.applied:
        _say(f"applied migrations {report.applied} to schema {db.schema!r}; now at version {report.version_current}")
    else:
        _say(f"schema {db.schema!r} is up to date at version {report.version_current}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from payq.demo import run_demo

    steps = 6
    _say(f"[1/{steps}] connecting (embedded PostgreSQL unless --dsn or PAYQ_DSN is given) ...")
    db = _connect(args, migrate=False)
    _say(f"      {db.dsn_source}: {dsn_masked(db.dsn)}")
    _say(f"[2/{steps}] migrating schema {db.schema!r} ...")
    migrated = db.migrate()
    _say(f"      applied {migrated.applied or 'nothing (up to date)'}; version {migrated.version_current}")
    r = run_demo(db, wallet_count=args.wallets, withdrawal_count=args.withdrawals, thread_count=args.threads,
                 say=_say)
    _say("")
    _say("payq demo report")
    _say(f"  withdrawals:              {r.withdrawals} ({r.expiring_holds} with a hold expiring after 1 s)")
    _say(f"  expired under payouts:    {r.holds_expired_under_payout} hold(s)")
    _say(f"  paid:                     {r.paid}")
    _say(f"  failed and refunded:      {r.failed_and_released}")
    _say(f"  needs review:             {r.needs_review}")
    _say(f"  retried / unknown tries:  {r.retried_attempts} / {r.unknown_attempts}")
    _say(f"  provider requests:        {r.provider_requests} (most for one key: {r.provider_max_calls_per_key})")
    _say(f"  provider keys paid twice: {r.provider_keys_paid_twice}")
    _say(f"  ledger vs provider:       {r.ledger_provider_mismatches} key(s) disagree")
    _say(f"  callbacks:                " + (", ".join(f"{k} {v}" for k, v in sorted(r.callbacks.items())) or "none"))
    _say(f"  money in:                 {r.money_in}")
    _say(f"  paid out (ledger):        {r.paid_out}")
    _say(f"  paid by provider:         {r.provider_paid}")
    _say(f"  left in wallets:          {r.left_in_wallets} (held {r.held_in_wallets})")
    _say(f"  conserved:                {'yes' if r.conserved else 'NO'}")
    _say(f"  ledger audit:             {'clean' if r.audit_ok else 'VIOLATIONS'}")
    for violation in r.audit_violations[:10]:
        _say(f"    {violation}")
    _say(f"  elapsed:                  {r.elapsed_s:.1f} s")
    _say(f"  peak memory (RSS):        {r.peak_rss_mib:.0f} MiB")
    _say(f"  result:                   {'OK: no money lost or paid twice' if r.ok else 'PROBLEM'}")
    return 0 if r.ok else 1


def cmd_ledger_accounts(args: argparse.Namespace) -> int:
    db = _connect(args)
    accounts = db.ledger.accounts(after_id=args.after_id, limit=args.limit, owner=args.owner)
    if args.json:
        _say(json.dumps([_account_json(a) for a in accounts], indent=2))
        return 0
    _say(f"{'id':>8}  {'owner':<24} {'namespace':<16} {'balance':>18} {'held':>14} {'available':>18}")
    for a in accounts:
        _say(f"{a.id:>8}  {a.owner[:24]:<24} {a.namespace[:16]:<16} {str(a.balance):>18} "
             f"{str(a.held):>14} {str(a.available):>18}")
    return 0


def _account_json(a: "payq.Account") -> Dict[str, Any]:
    return {
        "id": a.id,
        "owner": a.owner,
        "namespace": a.namespace,
        "currency": a.currency,
        "balance": str(a.balance.decimal),
        "held": str(a.held.decimal),
        "available": str(a.available.decimal),
        "pending": str(a.pending.decimal),
        "closed": a.closed,
    }


def cmd_ledger_history(args: argparse.Namespace) -> int:
    db = _reader(_connect(args))
    entries = db.ledger.history(args.account_id, after_seq=args.after_seq, limit=args.limit)
    if args.json:
        def decimal_text(money: Optional["payq.Money"]) -> Optional[str]:
            return None if money is None else str(money.decimal)

        _json_out([{"seq": e.seq, "transaction_id": e.transaction_id, "amount": str(e.amount.decimal),
                    "currency": e.amount.currency, "balance_before": decimal_text(e.balance_before),
                    "balance_after": decimal_text(e.balance_after), "created_at": e.created_at.isoformat()}
                   for e in entries])
        return 0
    _say(f"{'seq':>6}  {'transaction':>11}  {'before':>18} {'amount':>18} {'after':>18}  at")
    for e in entries:
        _say(f"{e.seq:>6}  {e.transaction_id:>11}  {str(e.balance_before):>18} {str(e.amount):>18} "
             f"{str(e.balance_after):>18}  {e.created_at.isoformat()}")
    return 0


def cmd_ledger_audit(args: argparse.Namespace) -> int:
    db = _reader(_connect(args))
    report = db.ledger.audit()
    if args.json:
        _json_out({"ok": report.ok, "accounts_checked": report.accounts_checked,
                   "entries_checked": report.entries_checked, "violations": [str(v) for v in report.violations]})
        return 0 if report.ok else EXIT_PROBLEM_FOUND
    _say(f"checked {report.accounts_checked} accounts and {report.entries_checked} entries")
    for violation in report.violations:
        _say(f"  VIOLATION {violation}")
    _say("ledger audit: clean" if report.ok else f"ledger audit: {len(report.violations)} violation(s)")
    return 0 if report.ok else EXIT_PROBLEM_FOUND


def _task_line(t: "payq.Task") -> str:
    return (f"{t.id:>8}  {t.state:<12} {t.queue[:16]:<16} {t.kind[:24]:<24} "
            f"{t.attempt:>3}/{t.max_attempts:<3} {(t.error or '')[:40]}")


def _task_json(t: "payq.Task") -> Dict[str, Any]:
    return {
        "id": t.id, "queue": t.queue, "kind": t.kind, "state": t.state, "attempt": t.attempt,
        "max_attempts": t.max_attempts, "idempotency_key": t.idempotency_key, "unique_key": t.unique_key,
        "partition_key": t.partition_key, "amount": None if t.amount is None else str(t.amount),
        "payload": t.payload, "result": t.result, "error": t.error, "worker_id": t.worker_id,
        "run_at": t.run_at.isoformat(), "created_at": t.created_at.isoformat(),
        "finished_at": None if t.finished_at is None else t.finished_at.isoformat(),
    }


def cmd_tasks_list(args: argparse.Namespace) -> int:
    db = _connect(args)
    tasks = db.tasks.list(state=args.state, queue=args.queue, kind=args.kind, key=args.key,
                          older_than=args.older_than, after_id=args.after_id, limit=args.limit)
    if args.json:
        _json_out([_task_json(t) for t in tasks])
        return 0
    _say(f"{'id':>8}  {'state':<12} {'queue':<16} {'kind':<24} {'try':>7}  error")
    for t in tasks:
        _say(_task_line(t))
    if len(tasks) == args.limit:
        _say(f"(more: --after-id {tasks[-1].id})")
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    db = _connect(args)
    t = db.tasks.get(args.task_id)
    attempts = db.tasks.attempts(args.task_id)
    if args.json:
        _json_out({**_task_json(t), "attempts": [
            {"attempt": a.attempt, "outcome": a.outcome, "duration_ms": a.duration_ms, "worker_id": a.worker_id,
             "started_at": a.started_at.isoformat(), "error": a.error} for a in attempts]})
        return 0
    _say(json.dumps(_task_json(t), indent=2))
    _say("attempts:")
    for a in attempts:
        _say(f"  #{a.attempt} {a.outcome:<8} {a.duration_ms:>6} ms  {a.worker_id}  {a.started_at.isoformat()}"
             f"  {a.error or ''}")
    return 0


def cmd_tasks_action(args: argparse.Namespace) -> int:
    db = _connect(args)
    tasks = db.tasks
    actor = args.actor
    if args.action == "resolve":
        tasks.resolve(args.task_id, applied=args.applied, actor=actor, note=args.note,
                      capture_into=args.capture_into, settled_by_hand=args.settled_by_hand)
    else:
        getattr(tasks, args.action)(args.task_id, actor=actor, note=args.note)
    _say(f"task {args.task_id}: {args.action} done; now {tasks.get(args.task_id).state}")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    db = _connect(args)
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise payq.InvalidArgument(f"--payload is not JSON: {exc}") from None
    except RecursionError:
        raise payq.InvalidArgument("--payload is nested too deeply") from None
    result = db.enqueue(args.kind, payload, queue=args.queue, unique_key=args.unique_key,
                        max_attempts=args.max_attempts)
    _say(f"task {result.task_id} {'enqueued' if result.created else 'already existed (unique key)'}")
    return 0


def _queue_json(q: Any) -> Dict[str, Any]:
    return {
        "name": q.name, "paused": q.paused,
        "paused_until": None if q.paused_until is None else q.paused_until.isoformat(),
        "concurrency": q.concurrency,
        "rate": None if q.rate is None else {"count": q.rate[0], "window_s": q.rate[1].total_seconds()},
        "amount": None if q.amount is None else {"amount": str(q.amount[0]), "window_s": q.amount[1].total_seconds()},
        "weight": q.weight, "pending": q.pending, "runnable": q.runnable, "running": q.running, "held": q.held,
        "dead": q.dead, "needs_review": q.needs_review,
        "oldest_runnable_age_s": None if q.oldest_runnable_age is None else q.oldest_runnable_age.total_seconds(),
        "started_last_minute": q.started_last_minute,
    }


def cmd_queues_list(args: argparse.Namespace) -> int:
    db = _connect(args)
    queues = db.queues.list()
    if args.json:
        _json_out([_queue_json(q) for q in queues])
        return 0
    _say(f"{'queue':<20} {'state':<8} {'pending':>8} {'due':>7} {'running':>8} {'held':>6} {'dead':>6} "
         f"{'review':>7} {'lag':>9} {'/min':>6}  limits")
    for q in queues:
        lag = "-" if q.oldest_runnable_age is None else f"{q.oldest_runnable_age.total_seconds():.1f}s"
        limits = q.limits_text()
        _say(f"{q.name[:20]:<20} {q.status:<8} {q.pending:>8} {q.runnable:>7} {q.running:>8} {q.held:>6} "
             f"{q.dead:>6} {q.needs_review:>7} {lag:>9} {q.started_last_minute:>6}  {', '.join(limits) or '-'}")
    return 0


def cmd_queues_pause(args: argparse.Namespace) -> int:
    db = _connect(args)
    if args.pause_action == "pause":
        db.queues.pause(args.name)
    else:
        db.queues.resume(args.name)
    _say(f"queue {args.name}: {'paused' if args.pause_action == 'pause' else 'resumed'}")
    return 0


def cmd_queues_set(args: argparse.Namespace) -> int:
    db = _connect(args)
    db.queues.configure(args.name, concurrency=args.concurrency, rate=args.rate, amount=args.amount,
                        weight=args.weight)
    _say(f"queue {args.name}: limits set")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    db = _connect(args)
    if args.prometheus:
        from payq.metrics import render

        sys.stdout.write(render(db))
        return 0
    stats = db.tasks.stats()
    if args.json:
        _say(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    states = ["held", "pending", "running", "succeeded", "dead", "needs_review", "cancelled"]
    _say(f"{'queue':<20}" + "".join(f"{s:>13}" for s in states))
    for queue in sorted(stats):
        _say(f"{queue[:20]:<20}" + "".join(f"{stats[queue].get(s, 0):>13}" for s in states))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import importlib
    from datetime import timedelta

    from payq.worker import Worker, registry

    for module in args.app:
        try:
            importlib.import_module(module)  # registers the module's handlers
        except ImportError as exc:
            raise payq.ConfigError(f"--app {module}: cannot import it: {exc}") from None
    queues = args.queues
    db = _connect(args)
    worker = Worker(db, queues=queues, registry=registry, concurrency=args.concurrency, batch=args.batch,
                    poll_interval=timedelta(milliseconds=args.poll_ms),
                    shutdown_grace=timedelta(seconds=args.grace_s), maintenance=not args.no_maintenance)
    metrics = None
    if args.metrics_port is not None:
        from payq.metrics import MetricsServer, render

        metrics = MetricsServer(lambda: render(db, worker_stats=worker.stats(), worker_id=worker.worker_id),
                                host=args.metrics_host, port=args.metrics_port).start()
    print(json.dumps({"event": "worker_ready", "worker": worker.worker_id, "queues": queues,
                      "kinds": registry.kinds(), "concurrency": args.concurrency,
                      "metrics": None if metrics is None else metrics.url}), file=sys.stderr, flush=True)
    try:
        worker.run()
    except Exception as exc:  # noqa: BLE001 - the error of the worker thread that failed
        # One JSON line like the worker's own log, not a traceback, and a
        # status a supervisor can tell from a clean stop.
        print(json.dumps({"event": "worker_failed", "worker": worker.worker_id,
                          "error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr, flush=True)
        return EXIT_WORKER_FAILED
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from payq.dashboard.server import run

    return run(_connect(args), host=args.host, port=args.port, allowed_origins=args.origin)


def cmd_version(args: argparse.Namespace) -> int:
    _say(f"payq {payq.__version__}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with 64 (EX_USAGE), apart from payq's refusals (2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="payq", description="payq: safe money-moving side effects on PostgreSQL",
                     epilog="exit status: 0 done, 1 problem found, 2 refused (payq error), 3 server not running, "
                            "64 usage, 69 database unreachable, 70 worker failed")
    parser.add_argument("--dsn", default=None, help="libpq DSN (default: PAYQ_DSN, else the embedded server)")
    parser.add_argument("--read-dsn", default=None,
                        help="a standby for `ledger history`, `ledger audit` and the dashboard's pages "
                             "(default: PAYQ_READ_DSN, else the DSN itself)")
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
        "ledger": "inspect the ledger: accounts, history, audit",
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
        if name == "demo":
            command.add_argument("--wallets", type=_count(1, 100_000), default=200,
                                 help="wallets to open (default 200)")
            command.add_argument("--withdrawals", type=_count(0, 1_000_000), default=2000,
                                 help="withdrawals to run (default 2000)")
            command.add_argument("--threads", type=_count(1, 64), default=8, help="concurrent threads (default 8)")
    tasks = sub.add_parser("tasks", help="inspect and act on outbox tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = tasks_sub.add_parser("list", help="list tasks")
    listing.add_argument("--state", choices=["held", "pending", "running", "succeeded", "dead", "needs_review",
                                             "cancelled"])
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument("--kind", help="only this task kind")
    listing.add_argument("--key", help="the task with this unique or idempotency key")
    listing.add_argument("--older-than", type=_duration, default=None,
                         help="created at least this long ago, e.g. 30m or 2d (stuck work)")
    listing.add_argument("--after-id", type=int, default=0, help="page: tasks with a larger id")
    listing.add_argument("--limit", type=int, default=100, help="page size (<= 1000)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_tasks_list)
    show = tasks_sub.add_parser("show", help="one task and its attempt history")
    show.add_argument("task_id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON (the task with its attempts)")
    show.set_defaults(handler=cmd_tasks_show)
    for action, text in (("retry", "send a dead or cancelled task again"),
                         ("cancel", "cancel a task that never ran (its hold is released)"),
                         ("release", "approve a held task"),
                         ("resolve", "settle a needs_review task after checking with the provider")):
        command = tasks_sub.add_parser(action, help=text)
        command.add_argument("task_id", type=int)
        command.add_argument("--actor", required=True, help="who does this (recorded)")
        command.add_argument("--note", default="", help="why (recorded)")
        if action == "resolve":
            outcome = command.add_mutually_exclusive_group(required=True)
            outcome.add_argument("--applied", dest="applied", action="store_true",
                                 help="the provider applied it: run the success side")
            outcome.add_argument("--not-applied", dest="applied", action="store_false",
                                 help="it was not applied: run the failure side")
            how = command.add_mutually_exclusive_group()
            how.add_argument("--capture-into", type=int, default=None, metavar="ACCOUNT_ID",
                             help="with --applied, for a task whose settlement failed: capture its hold into "
                                  "this account instead of the one named at enqueue")
            how.add_argument("--settled-by-hand", action="store_true",
                             help="with --applied, for a task whose settlement failed: release its hold, because "
                                  "you recorded the money's movement in the ledger yourself (--note says how)")
        command.set_defaults(handler=cmd_tasks_action, action=action)
    enqueue = sub.add_parser("enqueue", help="enqueue one task")
    enqueue.add_argument("kind")
    enqueue.add_argument("--payload", default="{}", help="JSON payload")
    enqueue.add_argument("--queue", default="default")
    enqueue.add_argument("--unique-key", default=None)
    enqueue.add_argument("--max-attempts", type=int, default=10)
    enqueue.set_defaults(handler=cmd_enqueue)
    worker = sub.add_parser("worker", help="run handlers for queued tasks (SIGTERM/SIGINT: graceful stop)")
    worker.add_argument("--app", action="append", default=[], required=True,
                        help="module that registers handlers with @payq.handler (repeatable)")
    worker.add_argument("--queues", type=_queue_weights, default=[("default", 1)],
                        help="comma-separated queues, each optionally name:weight")
    worker.add_argument("--concurrency", type=int, default=4, help="threads, one connection each")
    worker.add_argument("--batch", type=int, default=10, help="tasks claimed at a time per thread")
    worker.add_argument("--poll-ms", type=int, default=1000, help="poll interval when no NOTIFY arrives")
    worker.add_argument("--grace-s", type=int, default=30, help="shutdown grace for in-flight tasks")
    worker.add_argument("--no-maintenance", action="store_true", help="do not take part in maintenance")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on http://HOST:PORT/metrics")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    worker.set_defaults(handler=cmd_worker)
    dashboard = sub.add_parser("dashboard", help="serve the web dashboard until SIGINT/SIGTERM (token login: "
                                                  "PAYQ_DASHBOARD_TOKEN, else one is generated and printed)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free)")
    dashboard.add_argument("--origin", action="append", default=[],
                           help="public origin when behind a TLS proxy, e.g. https://ops.example.com (repeatable)")
    dashboard.set_defaults(handler=cmd_dashboard)
    stats = sub.add_parser("stats", help="task counts per queue and state")
    output = stats.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--prometheus", action="store_true", help="print the metrics in Prometheus text format")
    stats.set_defaults(handler=cmd_stats)
    queues = sub.add_parser("queues", help="queues: depth, lag, limits; pause, resume, set limits")
    queues.set_defaults(handler=cmd_queues_list, json=False)
    queues_sub = queues.add_subparsers(dest="queues_command")
    queues_list = queues_sub.add_parser("list", help="every queue with depth, lag and limits (the default)")
    queues_list.add_argument("--json", action="store_true", help="print JSON")
    queues_list.set_defaults(handler=cmd_queues_list)
    for action, text in (("pause", "stop claims from a queue (running tasks finish)"),
                         ("resume", "let workers claim from a queue again")):
        command = queues_sub.add_parser(action, help=text)
        command.add_argument("name")
        command.set_defaults(handler=cmd_queues_pause, pause_action=action)
    limits = queues_sub.add_parser("set", help="set a queue's limits (unset options mean unlimited)")
    limits.add_argument("name")
    limits.add_argument("--concurrency", type=int, default=None, help="running tasks at most")
    limits.add_argument("--rate", type=_rate, default=None, help="starts per window, e.g. 10/1s")
    limits.add_argument("--amount", type=_amount_limit, default=None,
                        help="money started per window, e.g. 50000.00CNY/1h")
    limits.add_argument("--weight", type=int, default=1, help="share for workers serving several queues")
    limits.set_defaults(handler=cmd_queues_set)
    ledger = sub.add_parser("ledger", help=helps["ledger"])
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    accounts = ledger_sub.add_parser("accounts", help="list accounts with balances")
    accounts.add_argument("--owner", default=None, help="only this owner's accounts")
    accounts.add_argument("--after-id", type=int, default=0, help="page: accounts with a larger id")
    accounts.add_argument("--limit", type=int, default=100, help="page size (<= 1000)")
    accounts.add_argument("--json", action="store_true", help="print JSON")
    accounts.set_defaults(handler=cmd_ledger_accounts)
    history = ledger_sub.add_parser("history", help="an account's journal: before, amount, after")
    history.add_argument("account_id", type=int)
    history.add_argument("--after-seq", type=int, default=0, help="page: entries with a larger seq")
    history.add_argument("--limit", type=int, default=100, help="page size (<= 1000)")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_ledger_history)
    audit = ledger_sub.add_parser("audit", help="check every ledger invariant (exit 1 on a violation)")
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.set_defaults(handler=cmd_ledger_audit)
    return parser


def _refusal(exc: BaseException) -> str:
    """One line for stderr: the error's class and message, its lines (a
    server's DETAIL and HINT) joined."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"payq: {type(exc).__name__}: {'; '.join(lines)}"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except payq.DatabaseError as exc:
        print(_refusal(exc), file=sys.stderr)
        unreachable = (exc.sqlstate or "").startswith("08")
        return EXIT_UNAVAILABLE if unreachable else EXIT_REFUSED
    except payq.Error as exc:
        print(_refusal(exc), file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("payq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
