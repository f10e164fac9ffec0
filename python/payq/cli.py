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
import os
import re
import sys
from datetime import timedelta
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import payq
from payq import _worker_cli, keys_cli
from payq.database import dsn_masked
from payq.doctor import cmd_doctor
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


def _json_out(value: Any) -> None:
    _say(json.dumps(value, indent=2, sort_keys=True, default=str))


def _say(text: str) -> None:
    print(text, flush=True)


def _done(args: argparse.Namespace, sentence: str, answer: Dict[str, Any]) -> None:
    """What an action did: ``answer`` as JSON with --json, else ``sentence``."""
    if args.json:
        _json_out(answer)
    else:
        _say(sentence)


# Table columns of names (queues, kinds, owners) and errors are as wide as
# their longest value up to a cap; a longer value is cut and ends in this,
# unless --wide shows it whole.
_ELLIPSIS = "..."
_NAME_WIDTH_MAX = 32
_ERROR_WIDTH_MAX = 60

Column = Tuple[str, str, Optional[int]]  # title, "<" or ">", width cap (None: never cut)


def _fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(_ELLIPSIS))] + _ELLIPSIS


def _table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], wide: bool) -> None:
    """Print ``rows`` under ``columns``, each column as wide as its widest
    cell (up to its cap unless ``wide``); the last column is not padded."""
    cells = [[str(value).replace("\r", " ").replace("\n", " ") for value in row] for row in rows]
    widths = []
    for i, (title, _, cap) in enumerate(columns):
        width = max([len(title)] + [len(row[i]) for row in cells])
        widths.append(width if wide or cap is None else min(width, max(cap, len(title))))

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, ((_, align, _cap), value) in enumerate(zip(columns, values)):
            text = _fit(value, widths[i])
            parts.append(text if i == len(columns) - 1 else f"{text:{align}{widths[i]}}")
        return "  ".join(parts).rstrip()

    _say(line([title for title, _, _ in columns]))
    for row in cells:
        _say(line(row))


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
    if not args.json:
        _say(f"starting the embedded PostgreSQL server in {server.home} ...")
    dsn = server.up()
    if args.json:
        _json_out({"home": str(server.home), "dsn": dsn_masked(dsn), "running": True})
        return 0
    status = server.status()
    _say(f"running: {dsn_masked(dsn)} (PostgreSQL from {status.binaries_source}: {status.binaries})")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    server = EmbeddedServer(args.home)
    server.down()
    _done(args, f"stopped the embedded server in {server.home}", {"home": str(server.home), "running": False})
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
        _say(f"  postgres:    {status.binaries or 'none found'}"
             + (f" ({status.binaries_source})" if status.binaries_source else ""))
        if os.environ.get("PAYQ_DSN"):
            _say("  in use:      no: PAYQ_DSN is set, so payq connects there (payq doctor)")
    return 0 if status.running else EXIT_NOT_RUNNING


def cmd_migrate(args: argparse.Namespace) -> int:
    db = _connect(args, migrate=False)
    report = db.migrate()
    if args.json:
        _json_out({"schema": db.schema, "applied": list(report.applied), "version": report.version_current})
    elif report.applied:
        _say(f"applied migrations {report.applied} to schema {db.schema!r}; now at version {report.version_current}")
    else:
        _say(f"schema {db.schema!r} is up to date at version {report.version_current}")
    return 0


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from payq.demo import DEMO_SCHEMA, run_demo

    # The demo leaves wallets, dead tasks, alerts and queues behind: in a
    # schema of its own unless --schema names one.
    schema = args.schema if args.schema_given else DEMO_SCHEMA
    # With --json, stdout is the report alone; the steps go to stderr.
    say = _note if args.json else _say
    steps = 6
    say(f"[1/{steps}] connecting (embedded PostgreSQL unless --dsn or PAYQ_DSN is given) ...")
    db = payq.connect(args.dsn, schema=schema, migrate=False)
    say(f"      {db.dsn_source}: {dsn_masked(db.dsn)}")
    say(f"[2/{steps}] migrating schema {db.schema!r} ...")
    migrated = db.migrate()
    say(f"      applied {migrated.applied or 'nothing (up to date)'}; version {migrated.version_current}")
    r = run_demo(db, wallet_count=args.wallets, withdrawal_count=args.withdrawals, thread_count=args.threads,
                 say=say, progress=sys.stderr if args.json else sys.stdout)
    if args.json:
        _json_out({"schema": db.schema, **r.as_json()})
        return 0 if r.ok else EXIT_PROBLEM_FOUND
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
    _say(f"  alerts:                   {r.alerts} raised, {r.alerts_open} still open (payq.alerts, default handler)")
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
    where = "" if db.schema == "payq" else f" --schema {db.schema}"
    same_dsn = " (with the same --dsn)" if args.dsn else ""
    _say(f"  look around:              payq{where} tasks list --state dead{same_dsn}")
    return 0 if r.ok else EXIT_PROBLEM_FOUND


def cmd_ledger_accounts(args: argparse.Namespace) -> int:
    db = _connect(args)
    accounts = db.ledger.accounts(after_id=args.after_id, limit=args.limit, owner=args.owner)
    if args.json:
        _say(json.dumps([_account_json(a) for a in accounts], indent=2))
        return 0
    _table([("id", ">", None), ("owner", "<", _NAME_WIDTH_MAX), ("namespace", "<", _NAME_WIDTH_MAX),
            ("balance", ">", None), ("held", ">", None), ("available", ">", None)],
           [[a.id, a.owner, a.namespace, a.balance, a.held, a.available] for a in accounts], args.wide)
    return 0


def cmd_ledger_account(args: argparse.Namespace) -> int:
    # A read: get_account never opens the account it looks for.
    account = _reader(_connect(args)).ledger.get_account(args.owner, args.currency, args.namespace)
    if args.json:
        _json_out(_account_json(account))
        return 0
    _table([("id", ">", None), ("owner", "<", None), ("namespace", "<", None), ("balance", ">", None),
            ("held", ">", None), ("available", ">", None), ("closed", "<", None)],
           [[account.id, account.owner, account.namespace, account.balance, account.held, account.available,
             "yes" if account.closed else "no"]], True)
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
    _table([("seq", ">", None), ("transaction", ">", None), ("before", ">", None), ("amount", ">", None),
            ("after", ">", None), ("at", "<", None)],
           [[e.seq, e.transaction_id, e.balance_before, e.amount, e.balance_after, e.created_at.isoformat()]
            for e in entries], args.wide)
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
    tasks = [keys_cli.task_listed(t) for t in tasks]  # "encrypted", never decrypted in a list
    if args.json:
        _json_out([_task_json(t) for t in tasks])
        return 0
    _table([("id", ">", None), ("state", "<", None), ("queue", "<", _NAME_WIDTH_MAX), ("kind", "<", _NAME_WIDTH_MAX),
            ("try", ">", None), ("error", "<", _ERROR_WIDTH_MAX)],
           [[t.id, t.state, t.queue, t.kind, f"{t.attempt}/{t.max_attempts}", t.error or ""] for t in tasks],
           args.wide)
    if len(tasks) == args.limit:
        _say(f"(more: --after-id {tasks[-1].id})")
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    db = _connect(args)
    # Decrypted with the environment's keyring; KeyMissing without one.
    t = keys_cli.task_shown(db.tasks.get(args.task_id))
    attempts = keys_cli.attempts_shown(db.tasks.attempts(args.task_id), t.kind)
    # Operators' actions (and provider callbacks), as on the dashboard's timeline.
    actions = db.tasks.actions(args.task_id)
    if args.json:
        _json_out({**_task_json(t), "attempts": [
            {"attempt": a.attempt, "outcome": a.outcome, "duration_ms": a.duration_ms, "worker_id": a.worker_id,
             "started_at": a.started_at.isoformat(), "error": a.error} for a in attempts],
            "actions": [{"action": a.action, "actor": a.actor, "note": a.note, "created_at": a.created_at.isoformat()}
                        for a in actions]})
        return 0
    _say(json.dumps(_task_json(t), indent=2))
    _say("attempts:" if attempts else "attempts: none")
    for a in attempts:
        _say(f"  #{a.attempt} {a.outcome:<8} {a.duration_ms:>6} ms  {a.worker_id}  {a.started_at.isoformat()}"
             f"  {a.error or ''}")
    _say("actions:" if actions else "actions: none")
    action_width = max((len(action.action) for action in actions), default=0)
    for action in actions:
        _say(f"  {action.created_at.isoformat()}  {action.action:<{action_width}}  by {action.actor}"
             + (f"  {json.dumps(action.note, ensure_ascii=False)}" if action.note else ""))
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
    state = tasks.get(args.task_id).state
    _done(args, f"task {args.task_id}: {args.action} done; now {state}",
          {"task_id": args.task_id, "action": args.action, "state": state})
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
    _done(args, f"task {result.task_id} {'enqueued' if result.created else 'already existed (unique key)'}",
          {"task_id": result.task_id, "created": result.created})
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
    rows = []
    for q in queues:
        lag = "-" if q.oldest_runnable_age is None else f"{q.oldest_runnable_age.total_seconds():.1f}s"
        rows.append([q.name, q.status, q.pending, q.runnable, q.running, q.held, q.dead, q.needs_review, lag,
                     q.started_last_minute, ", ".join(q.limits_text()) or "-"])
    _table([("queue", "<", _NAME_WIDTH_MAX), ("state", "<", None), ("pending", ">", None), ("due", ">", None),
            ("running", ">", None), ("held", ">", None), ("dead", ">", None), ("review", ">", None),
            ("lag", ">", None), ("/min", ">", None), ("limits", "<", None)], rows, args.wide)
    return 0


def cmd_queues_pause(args: argparse.Namespace) -> int:
    db = _connect(args)
    # A name without settings or tasks (a typo) is refused by the library
    # with UnknownQueue, so nothing is created: exit 2.
    if args.pause_action == "pause":
        db.queues.pause(args.name, actor=args.actor, note=args.note)
    else:
        db.queues.resume(args.name, actor=args.actor, note=args.note)
    _done(args, f"queue {args.name}: {'paused' if args.pause_action == 'pause' else 'resumed'}",
          _queue_json(db.queues.get(args.name)))
    return 0


def cmd_queues_set(args: argparse.Namespace) -> int:
    db = _connect(args)
    db.queues.configure(args.name, concurrency=args.concurrency, rate=args.rate, amount=args.amount,
                        weight=args.weight, actor=args.actor, note=args.note)
    _done(args, f"queue {args.name}: limits set", _queue_json(db.queues.get(args.name)))
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
    states = payq.outbox.TASK_STATES
    columns: List[Column] = [("queue", "<", _NAME_WIDTH_MAX)] + [(s, ">", None) for s in states]
    _table(columns, [[queue] + [stats[queue].get(s, 0) for s in states] for queue in sorted(stats)], args.wide)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # The options and the run loop are shared with `manage.py payq_worker`
    # and `flask payq worker` (payq/_worker_cli.py).
    options = _worker_cli.worker_options(vars(args))
    missing = _worker_cli.app_import(options.modules)
    if missing is not None:
        print(f"payq: error: {missing}", file=sys.stderr)
        return EXIT_USAGE
    return _worker_cli.worker_run(_connect(args), options)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from payq.dashboard.server import run

    return run(_connect(args), host=args.host, port=args.port, allowed_origins=args.origin)


def cmd_version(args: argparse.Namespace) -> int:
    _done(args, f"payq {payq.__version__}", {"version": payq.__version__})
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples of an epilog as written, and shows an option's
    default unless its help already says it (or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or isinstance(default, bool)
                or not isinstance(default, (str, int, float)) or default in ("", argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with 64 (EX_USAGE), apart from payq's refusals (2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _SchemaOption(argparse.Action):
    """``--schema``, remembering that it was given: ``payq demo`` uses a
    schema of its own otherwise."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.schema_given = True


def _global_options(parser: argparse.ArgumentParser, *, main: bool) -> None:
    """The options every command takes, before or after its name. Only the
    main parser holds their defaults: a command's parser sets only what was
    given after it, so `payq --json queues` and `payq queues --json` agree."""

    def default(value: Any) -> Any:
        return value if main else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("--dsn", default=default(None), help="libpq DSN (default: PAYQ_DSN, else the embedded server)")
    group.add_argument("--read-dsn", default=default(None),
                       help="a standby for `ledger history`, `ledger audit`, `ledger account` and the dashboard's "
                            "pages (default: PAYQ_READ_DSN, else the DSN itself)")
    group.add_argument("--schema", action=_SchemaOption, default=default("payq"),
                       help="schema holding payq's tables (default: payq; `payq demo`: payq_demo)")
    group.add_argument("--home", default=default(None),
                       help="embedded server home (default: PAYQ_HOME, else ~/.local/share/payq; "
                            "/var/lib/payq as root)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print JSON: every listing, and what an action did")
    group.add_argument("--wide", action="store_true", default=default(False),
                       help="tables show long names and errors whole instead of cutting them with '...'")


class _CommandParser(_Parser):
    """A command's parser: its help keeps examples as written, and it takes
    the global options after the command's name too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        _global_options(self, main=False)


def _queue_actor_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--actor", default=None, help="who does this: recorded in the queue's action log "
                                                        "(default: not recorded)")
    command.add_argument("--note", default="", help="why (recorded with --actor)")


_EXAMPLES = """\
examples:
  payq up                                      start the embedded PostgreSQL server
  payq demo                                    withdrawals against a faulty provider (schema payq_demo)
  payq tasks list --state dead --queue payouts
  payq tasks show 42 --json                    a task, its attempts and the operators' actions
  payq tasks retry 42 --actor ops:lin --note "provider fixed"
  payq tasks resolve 43 --applied --actor ops:lin --note "provider shows it paid"
  payq queues                                  depth, lag and limits of every queue
  payq queues pause payouts --actor ops:lin --note "provider maintenance"
  payq queues set payouts --concurrency 8 --rate 10/1s --amount 50000.00CNY/1h
  payq ledger account user:42 CNY              one account, never created by looking
  payq ledger audit                            exit 1 on a violation (for cron)
  payq stats --json --dsn "host=db dbname=app"
  payq worker --app myapp.tasks --queues payouts:3,sms

Global options go before or after the command. Every listing and every
action takes --json.

exit status: 0 done, 1 problem found, 2 refused (payq error), 3 server not running,
64 usage, 69 database unreachable, 70 worker failed
"""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="payq", description="payq: safe money-moving side effects on PostgreSQL",
                     epilog=_EXAMPLES, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"payq {payq.__version__}",
                        help="print payq's version and exit")
    _global_options(parser, main=True)
    parser.set_defaults(schema_given=False)
    # No command: the help, on stdout with status 0 (see main).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    commands: Dict[str, Callable[[argparse.Namespace], int]] = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "migrate": cmd_migrate,
        "demo": cmd_demo,
        "version": cmd_version,
    }
    helps = {
        "ledger": "inspect the ledger: accounts, one account, history, audit",
        "up": "start the embedded PostgreSQL server (create it if needed)",
        "down": "stop the embedded server (data is kept)",
        "status": "show the embedded server's state (exit 3 when not running)",
        "migrate": "apply missing schema migrations",
        "demo": "run the end-to-end demo (embedded server unless --dsn; schema payq_demo unless --schema)",
        "version": "print payq's version",
    }
    for name, handler in commands.items():
        command = sub.add_parser(name, help=helps[name])
        command.set_defaults(handler=handler)
        if name == "demo":
            command.add_argument("--wallets", type=_count(1, 100_000), default=200,
                                 help="wallets to open (default 200)")
            command.add_argument("--withdrawals", type=_count(0, 1_000_000), default=2000,
                                 help="withdrawals to run (default 2000)")
            command.add_argument("--threads", type=_count(1, 64), default=8, help="concurrent threads (default 8)")
    tasks = sub.add_parser("tasks", help="inspect and act on outbox tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = tasks_sub.add_parser("list", help="list tasks")
    listing.add_argument("--state", choices=payq.outbox.TASK_STATES, help="only tasks in this state")
    listing.add_argument("--queue", help="only this queue")
    listing.add_argument("--kind", help="only this task kind")
    listing.add_argument("--key", help="the task with this unique or idempotency key")
    listing.add_argument("--older-than", type=_duration, default=None,
                         help="created at least this long ago, e.g. 30m or 2d (stuck work)")
    listing.add_argument("--after-id", type=int, default=0, help="page: tasks with a larger id")
    listing.add_argument("--limit", type=int, default=100, help="page size, at most 1000")
    listing.set_defaults(handler=cmd_tasks_list)
    show = tasks_sub.add_parser("show", help="one task, its attempts and the actions taken on it")
    show.add_argument("task_id", type=int, help="the task's id")
    show.set_defaults(handler=cmd_tasks_show)
    for action, text in (("retry", "send a dead or cancelled task again"),
                         ("cancel", "cancel a task that never ran (its hold is released)"),
                         ("release", "approve a held task"),
                         ("resolve", "settle a needs_review task after checking with the provider")):
        command = tasks_sub.add_parser(action, help=text)
        command.add_argument("task_id", type=int, help="the task's id")
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
    enqueue.add_argument("kind", help="the task kind, e.g. sms.send (a handler registered for it runs it)")
    enqueue.add_argument("--payload", default="{}", help="the task's JSON payload")
    enqueue.add_argument("--queue", default="default", help="the queue to put it on")
    enqueue.add_argument("--unique-key", default=None,
                         help="a key naming this request: enqueuing it again returns the existing task "
                              "(another payload under it is refused)")
    enqueue.add_argument("--max-attempts", type=int, default=10, help="attempts before the task goes dead")
    enqueue.set_defaults(handler=cmd_enqueue)
    keys_cli.argparse_add(sub)
    worker = sub.add_parser("worker", help="run handlers for queued tasks (SIGTERM/SIGINT: graceful stop)")
    _worker_cli.argparse_add(worker)
    worker.set_defaults(handler=cmd_worker)
    dashboard = sub.add_parser("dashboard", help="serve the web dashboard until SIGINT/SIGTERM (token login: "
                                                  "PAYQ_DASHBOARD_TOKEN, else one is generated and printed)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free)")
    dashboard.add_argument("--origin", action="append", default=[],
                           help="public origin when behind a TLS proxy, e.g. https://ops.example.com (repeatable)")
    dashboard.set_defaults(handler=cmd_dashboard)
    doctor = sub.add_parser("doctor", help="diagnose the set-up: versions, DSN, server, schema, durability, "
                                           "pooler, clock skew, workers, paused queues (exit 1 on a problem)")
    doctor.set_defaults(handler=cmd_doctor)
    stats = sub.add_parser("stats", help="task counts per queue and state")
    stats.add_argument("--prometheus", action="store_true",
                       help="print the metrics in Prometheus text format (not with --json)")
    stats.set_defaults(handler=cmd_stats)
    queues = sub.add_parser("queues", help="queues: depth, lag, limits; pause, resume, set limits")
    queues.set_defaults(handler=cmd_queues_list)
    queues_sub = queues.add_subparsers(dest="queues_command", metavar="ACTION")
    queues_list = queues_sub.add_parser("list", help="every queue with depth, lag and limits (the default)")
    queues_list.set_defaults(handler=cmd_queues_list)
    for action, text in (("pause", "stop claims from a queue (running tasks finish); exit 2 if there is no such queue"),
                         ("resume", "let workers claim from a queue again; exit 2 if there is no such queue")):
        command = queues_sub.add_parser(action, help=text)
        command.add_argument("name", help="the queue's name, as `payq queues` lists it")
        _queue_actor_options(command)
        command.set_defaults(handler=cmd_queues_pause, pause_action=action)
    limits = queues_sub.add_parser("set", help="set a queue's limits (unset options mean unlimited)")
    limits.add_argument("name", help="the queue's name (set creates it if needed)")
    limits.add_argument("--concurrency", type=int, default=None, help="running tasks at most (default: unlimited)")
    limits.add_argument("--rate", type=_rate, default=None, help="starts per window, e.g. 10/1s (default: unlimited)")
    limits.add_argument("--amount", type=_amount_limit, default=None,
                        help="money started per window, e.g. 50000.00CNY/1h (default: unlimited)")
    limits.add_argument("--weight", type=int, default=1, help="share for workers serving several queues")
    _queue_actor_options(limits)
    limits.set_defaults(handler=cmd_queues_set)
    ledger = sub.add_parser("ledger", help=helps["ledger"])
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    accounts = ledger_sub.add_parser("accounts", help="list accounts with balances")
    accounts.add_argument("--owner", default=None, help="only this owner's accounts")
    accounts.add_argument("--after-id", type=int, default=0, help="page: accounts with a larger id")
    accounts.add_argument("--limit", type=int, default=100, help="page size, at most 1000")
    accounts.set_defaults(handler=cmd_ledger_accounts)
    account = ledger_sub.add_parser("account", help="one account by owner and currency (read only: exit 2 if "
                                                    "there is none, nothing is created)")
    account.add_argument("owner", help="the account's owner, e.g. user:42")
    account.add_argument("currency", help="its currency code, e.g. CNY")
    account.add_argument("--namespace", default="default", help="its namespace")
    account.set_defaults(handler=cmd_ledger_account)
    history = ledger_sub.add_parser("history", help="an account's journal: before, amount, after")
    history.add_argument("account_id", type=int, help="the account's id (`payq ledger account` shows it)")
    history.add_argument("--after-seq", type=int, default=0, help="page: entries with a larger seq")
    history.add_argument("--limit", type=int, default=100, help="page size, at most 1000")
    history.set_defaults(handler=cmd_ledger_history)
    audit = ledger_sub.add_parser("audit", help="check every ledger invariant (exit 1 on a violation)")
    audit.set_defaults(handler=cmd_ledger_audit)
    return parser


def _refusal(exc: BaseException) -> str:
    """One line for stderr: the error's class and message, its lines (a
    server's DETAIL and HINT) joined."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"payq: {type(exc).__name__}: {'; '.join(lines)}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # A bare `payq` asks what it can do: the help, as for --help.
        parser.print_help()
        return 0
    if getattr(args, "prometheus", False) and args.json:
        parser.error("stats: --json and --prometheus cannot be combined")
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
