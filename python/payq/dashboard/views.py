"""The dashboard's pages and actions. Each view takes a :class:`Context`
(the database, the request, who is acting) and returns a
:class:`~payq.dashboard.wsgi.Response`; routing, authentication and CSRF
checks happen before a view runs (:mod:`payq.dashboard.app`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import payq
from payq.dashboard import queries
from payq.dashboard.audit import AuditCache
from payq.dashboard.encrypted import task_for_page
from payq.dashboard.render import Html, duration, escape, html, join, json_block, page, table, when
from payq.dashboard.throughput import Throughput
from payq.dashboard.wsgi import HttpError, Request, Response
from payq.outbox import ACTIONS_BY_STATE

__all__ = ["Context", "overview", "task_detail", "task_action", "accounts_list", "account_detail",
           "transaction_detail", "audit_page", "throughput_json", "PAGE_SIZE", "NOTE_BYTES_MAX"]

log = logging.getLogger("payq.dashboard")

PAGE_SIZE = 50
OWNER_CHARS_MAX = 200
NOTE_BYTES_MAX = 2000
"""What payq records as an action's note at most."""
VIOLATIONS_SHOWN_MAX = 200

_DONE = {
    "retry": "Sent again: the task is pending and will be claimed by a worker.",
    "cancel": "Cancelled: its failure side ran (a hold is released).",
    "release": "Released: workers may claim the task now.",
    "resolve_applied": "Resolved as applied: its success side ran.",
    "resolve_not_applied": "Resolved as not applied: its failure side ran.",
    "resolve_applied_captured_into": "Resolved as applied: its hold was captured into the account you named.",
    "resolve_applied_settled_by_hand": "Resolved as applied and settled by hand: its hold was released.",
}


@dataclass
class Context:
    """What a view needs: the database, the request and the acting operator."""

    db: "payq.Database"
    """Where actions are written: the primary."""
    request: Request
    actor: str
    csrf: str
    """The CSRF token for this browser and actor, put into every form."""
    throughput: Throughput
    audits: AuditCache
    logout: bool
    """True when the dashboard's own login is in use (a logout button)."""

    @property
    def read(self) -> "payq.Database":
        """Where pages read from: the standby of ``read_dsn`` when there is
        one (see :func:`payq.connect`), else the primary."""
        return self.db.reader

    def url(self, path: str, **query: object) -> str:
        """A URL inside the dashboard (see :meth:`Request.url`)."""
        return self.request.url(path, **query)

    def csrf_field(self) -> Html:
        """The hidden ``csrf`` input that every form carries."""
        return html('<input type="hidden" name="csrf" value="{token}">', token=self.csrf)

    def render(self, title: str, content: Html, *, status: int = 200, notice: Optional[str] = None,
               error: Optional[str] = None) -> Response:
        """An HTML response: ``content`` in the dashboard's page layout, with
        an optional ``notice`` or ``error`` and, under the dashboard's own
        login, a logout button."""
        logout = None
        if self.logout:
            logout = html('<form method="post" action="{action}" class="logout">{csrf}'
                          '<button type="submit">Log out</button></form>',
                          action=self.url("/logout"), csrf=self.csrf_field())
        body = page(title=title, static=self.url("/static"), base=self.request.script_name, actor=self.actor,
                    logout=logout, content=content, notice=notice, error=error)
        return Response(status, body.encode("utf-8"))


# ---------------------------------------------------------------- input


def _int(request: Request, name: str, default: int, *, low: int = 0, high: int = 2**63 - 1) -> int:
    text = request.query.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} is a whole number") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} is between {low} and {high}")
    return value


def _text(request: Request, name: str) -> Optional[str]:
    value = request.query.get(name, "").strip()
    return value or None


def _state_badge(state: str) -> Html:
    return html('<span class="state state-{state}">{state}</span>', state=state)


# ---------------------------------------------------------------- overview


def _chart(ctx: Context) -> Html:
    ctx.throughput.sample_if_due()
    snapshot = ctx.throughput.snapshot()
    return html(
        '<section><h2>Throughput and depth</h2>'
        '<canvas id="throughput" width="960" height="300" data-src="{src}" data-series="{series}" '
        'aria-label="Tasks finished per minute and queue depth over the last hour"></canvas>'
        '<p class="legend"><span class="key k-succeeded"></span>succeeded per minute '
        '<span class="key k-dead"></span>dead per minute <span class="key k-cancelled"></span>cancelled per minute '
        '<span class="key k-pending"></span>pending <span class="key k-running"></span>running</p>'
        '<p class="hint" id="chart-caption">Finished tasks per minute come from the database; {depth}</p>'
        "</section>",
        src=ctx.url("/throughput.json"), series=json.dumps(snapshot, separators=(",", ":")),
        depth=_depth_caption(ctx.throughput))


def _depth_caption(throughput: Throughput) -> str:
    """How depth is sampled, as it is: by a thread of ``payq dashboard``, or
    (mounted in a host application) only when this page or its refresh asks."""
    interval = f"{throughput.interval.total_seconds():g}"
    if throughput.in_background:
        return f"depth is sampled by this dashboard every {interval} s while it runs."
    return (f"depth is sampled when this page asks (its chart refreshes while it is open), at most every "
            f"{interval} s: the line has gaps where nobody had the page open.")


def _queue_row(ctx: Context, q: "payq.outbox.QueueInfo") -> List[object]:
    state = q.status
    limits = q.limits_text()

    def count(state_name: str, value: int) -> Html:
        """``value``, linked to the queue's tasks in ``state_name`` unless it is 0."""
        if not value:
            return escape(value)
        return html('<a href="{href}">{n}</a>', href=ctx.url("/tasks", queue=q.name, state=state_name), n=value)

    return [html('<a href="{href}">{name}</a>', href=ctx.url("/tasks", queue=q.name), name=q.name), state,
            count("pending", q.pending), q.runnable, count("running", q.running), count("held", q.held),
            count("dead", q.dead), count("needs_review", q.needs_review), duration(q.oldest_runnable_age),
            q.started_last_minute, ", ".join(limits) or "-"]


def _audit_summary(ctx: Context) -> Html:
    last = ctx.audits.last
    if last is None:
        return html('<p>Not run since the dashboard started. <a href="{href}">Run the ledger audit</a></p>',
                    href=ctx.url("/audit", run=1))
    verdict = "clean" if last.report.ok else f"{len(last.report.violations)} violation(s)"
    return html('<p class="audit-{cls}">Ledger audit {when}: <strong>{verdict}</strong>. '
                '<a href="{href}">Details</a></p>',
                cls="ok" if last.report.ok else "bad", when=when(last.finished_at), verdict=verdict,
                href=ctx.url("/audit"))


def _replication_lag(ctx: Context) -> Html:
    """Where the pages read from, when that is a standby, and how far it trails."""
    if ctx.read is ctx.db:
        return Html("")
    lag = ctx.db.replication_lag()
    text = "not in recovery (the standby was promoted?)" if lag is None else f"lag {lag.total_seconds():.1f} s"
    return html('<p class="replica">Pages read from a standby: {text}.</p>', text=text)


def overview(ctx: Context) -> Response:
    """Queues with depth, lag and limits; the throughput chart; the audit."""
    queues = ctx.read.queues.list()
    review = sum(q.needs_review for q in queues)
    dead = sum(q.dead for q in queues)
    alerts = []
    if review:
        alerts.append(html('<li class="alert"><a href="{href}">{n} task(s) need review</a>: their outcome is '
                           "unknown; check with the provider, then resolve.</li>",
                           href=ctx.url("/tasks", state="needs_review"), n=review))
    if dead:
        alerts.append(html('<li><a href="{href}">{n} dead task(s)</a></li>', href=ctx.url("/tasks", state="dead"),
                           n=dead))
    rows = [_queue_row(ctx, q) for q in queues]
    content = html(
        '<ul class="alerts">{alerts}</ul>{chart}<section><h2>Queues</h2>{table}</section>'
        "<section><h2>Ledger</h2>{audit}{lag}</section>",
        alerts=join(alerts), chart=_chart(ctx),
        table=table(["queue", "state", "pending", "due", "running", "held", "dead", "review", "lag", "/min",
                     "limits"], rows, empty="no queues yet", numeric=range(2, 10)),
        audit=_audit_summary(ctx), lag=_replication_lag(ctx))
    return ctx.render("Overview", content)


def throughput_json(ctx: Context) -> Response:
    """The chart's data, refreshed by the page's script."""
    ctx.throughput.sample_if_due()
    body = json.dumps(ctx.throughput.snapshot(), separators=(",", ":")).encode()
    return Response(200, body, "application/json")


# ---------------------------------------------------------------- tasks


def _timeline(task: "payq.Task", attempts: Sequence["payq.Attempt"],
              actions: Sequence["payq.outbox.Action"]) -> Html:
    events: List[Tuple[datetime, int, Html]] = [
        (task.created_at, 0, html('<li class="ev-created">{at} enqueued on queue <code>{queue}</code>, '
                                  "at most {max} attempt(s)</li>",
                                  at=when(task.created_at), queue=task.queue, max=task.max_attempts))]
    for a in attempts:
        trace = Html("")
        if getattr(a, "traceback", None):
            trace = html('<details class="traceback"><summary>traceback</summary><pre>{t}</pre></details>',
                         t=a.traceback)
        events.append((a.started_at, 1, html(
            '<li class="ev-attempt outcome-{outcome}" id="attempt-{n}">{at} attempt #{n} by <code>{worker}</code>: '
            '<strong>{outcome}</strong> after {ms} ms{error}{trace}</li>',
            at=when(a.started_at), n=a.attempt, worker=a.worker_id, outcome=a.outcome, ms=a.duration_ms,
            error=html(": {e}", e=a.error) if a.error else "", trace=trace)))
    for action in actions:
        events.append((action.created_at, 2, html(
            '<li class="ev-action">{at} <strong>{action}</strong> by <code>{actor}</code>{note}</li>',
            at=when(action.created_at), action=action.action, actor=action.actor,
            note=html(": &ldquo;{n}&rdquo;", n=action.note) if action.note else "")))
    if task.finished_at is not None:
        events.append((task.finished_at, 3, html('<li class="ev-finished">{at} finished: {state}</li>',
                                                 at=when(task.finished_at), state=_state_badge(task.state))))
    events.sort(key=lambda event: (event[0], event[1]))
    return html('<ol class="timeline">{items}</ol>', items=join(e[2] for e in events))


def _action_form(ctx: Context, task: "payq.Task", action: str, label: str, explain: str,
                 extra: Html = Html(""), note: str = "") -> Html:
    return html(
        '<form method="post" action="{action}" class="action" id="form-{name}">{csrf}'
        "<h3>{label}</h3><p>{explain}</p>{extra}"
        '<label>Reason (recorded with your name) <textarea name="note" required maxlength="{max}" rows="2">'
        "{note}</textarea></label>"
        '<button type="submit" name="do" value="{name}">{label}</button></form>',
        action=ctx.url(f"/tasks/{task.id}/{action}"), name=action, csrf=ctx.csrf_field(), label=label,
        explain=explain, extra=extra, max=NOTE_BYTES_MAX, note=note)


def _action_forms(ctx: Context, task: "payq.Task", note: str) -> Html:
    forms = []
    allowed = ACTIONS_BY_STATE[task.state]
    if "release" in allowed:
        forms.append(_action_form(ctx, task, "release", "Release", "Approve the task: workers may claim it.",
                                  note=note))
    if "cancel" in allowed and task.attempt == 0:
        forms.append(_action_form(ctx, task, "cancel", "Cancel",
                                  "It never ran, so it was definitely not applied: its failure side runs "
                                  "(a hold is released).", note=note))
    if "retry" in allowed:
        forms.append(_action_form(ctx, task, "retry", "Retry",
                                  "Send it again with the same idempotency key. Refused when its failure side "
                                  "already ran (a released hold): enqueue a new task then.", note=note))
    if "resolve" in allowed:
        outcome = Html(
            "<fieldset><legend>What does the provider say?</legend>"
            '<label><input type="radio" name="outcome" value="applied" required> applied: run the success side '
            "(capture the hold)</label>"
            '<label><input type="radio" name="outcome" value="not_applied" required> not applied: run the failure '
            "side (release the hold)</label></fieldset>")
        explain = "Its outcome is unknown. Check with the provider first."
        if (task.error or "").startswith("settlement_failed") and task.settlement.hold_id is not None:
            explain = ("The provider's outcome is recorded, but its settlement failed (see the error). If it was "
                       "applied, choose how its hold is settled now.")
            outcome = Html(str(outcome) +
                           "<fieldset><legend>If applied, settle the hold</legend>"
                           '<label><input type="radio" name="settle" value="as_enqueued" checked> as enqueued '
                           "(capture into the account named at enqueue)</label>"
                           '<label><input type="radio" name="settle" value="capture_into"> capture into account '
                           '<input name="capture_into" inputmode="numeric" pattern="[0-9]+" size="10"></label>'
                           '<label><input type="radio" name="settle" value="by_hand"> settled by hand: release '
                           "the hold (your reason says how you adjusted the ledger)</label></fieldset>")
        forms.append(_action_form(ctx, task, "resolve", "Resolve", explain, outcome, note=note))
    if not forms:
        return Html('<p class="hint">No operator action applies to a task in this state.</p>')
    return join(forms)


def task_page(ctx: Context, task_id: int, *, status: int = 200, error: Optional[str] = None,
              note: str = "") -> Response:
    """One task: its fields, payload and result, the timeline of attempts
    and actions, and the actions its state allows."""
    task = ctx.read.tasks.get(task_id)
    # Decrypted with the environment's keyring, else "encrypted" and why.
    task, attempts, undecrypted = task_for_page(task, ctx.read.tasks.attempts(task_id))
    error = error or undecrypted
    actions = ctx.read.tasks.actions(task_id)
    ledger_fields = _task_ledger_fields(ctx, task)
    fields = [
        ("state", _state_badge(task.state)), ("queue", task.queue), ("kind", task.kind),
        ("attempts", f"{task.attempt} of {task.max_attempts}"), ("idempotency key", task.idempotency_key),
        ("unique key", task.unique_key or "-"), ("partition key", task.partition_key or "-"),
        ("priority", task.priority), ("amount", "-" if task.amount is None else str(task.amount)),
        ("run at", when(task.run_at)), ("created", when(task.created_at)), ("finished", when(task.finished_at)),
        ("worker", task.worker_id or "-"), ("error", task.error or "-"), *ledger_fields,
    ]
    details = join(html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in fields)
    result = html("<h2>Result</h2><pre>{r}</pre>", r=json_block(task.result)) if task.result is not None else ""
    content = html(
        '<dl class="fields">{details}</dl><h2>Payload</h2><pre id="payload">{payload}</pre>{result}'
        "<h2>Timeline</h2>{timeline}<h2>Actions</h2>{forms}",
        details=details, payload=json_block(task.payload), result=result,
        timeline=_timeline(task, attempts, actions), forms=_action_forms(ctx, task, note))
    notice = _DONE.get(ctx.request.query.get("done", ""))
    return ctx.render(f"Task {task.id}", content, status=status, notice=notice, error=error)


def _account_link(ctx: Context, account_id: int, owners: Dict[int, Tuple[str, str, str]]) -> Html:
    """An account named by its owner (namespace and currency after it), linked."""
    found = owners.get(account_id)
    if found is None:
        return html('<a href="{href}">account {id}</a>', href=ctx.url(f"/accounts/{account_id}"), id=account_id)
    owner, namespace, currency = found
    return html('<a href="{href}" title="account {id}">{owner}</a> <span class="hint">{ns} {cur}</span>',
                href=ctx.url(f"/accounts/{account_id}"), id=account_id, owner=owner,
                ns="" if namespace == "default" else namespace, cur=currency)


def _account_owners(ctx: Context, account_ids: Iterable[int]) -> Dict[int, Tuple[str, str, str]]:
    """Owner, namespace and currency of each account, by id (one query)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    with ctx.read.transaction() as t:
        rows = t.execute(queries.TRANSACTION_ACCOUNTS, ["{" + ",".join(str(i) for i in ids) + "}"])
    cell = queries.cell
    return {int(cell(r[0])): (cell(r[1]), cell(r[2]), cell(r[3])) for r in rows}


def _task_ledger_fields(ctx: Context, task: "payq.Task") -> List[Tuple[str, object]]:
    """What the task moves in the ledger, linked: its hold (and the account
    it is on), the account a capture goes into, the transaction a failure
    reverses, and the ledger transactions its settlement wrote."""
    settlement = task.settlement
    fields: List[Tuple[str, object]] = []
    hold = None if settlement.hold_id is None else ctx.read.ledger.get_hold(settlement.hold_id)
    if hold is None and settlement.reverse_transaction_id is None:
        return fields
    keys = [f"task:{task.id}:capture", f"task:{task.id}:release", f"task:{task.id}:reverse",
            None if hold is None else hold.key]
    with ctx.read.transaction() as t:
        operations = t.execute(queries.TASK_LEDGER_OPERATIONS, keys)
    accounts = [a for a in (hold.account_id if hold else None, settlement.capture_account_id) if a is not None]
    owners = _account_owners(ctx, accounts)
    if hold is not None:
        fields.append(("hold", html('<span id="task-hold">hold {id}: {amount} on {account}, {status}</span>',
                                    id=hold.id, amount=str(hold.amount), account=_account_link(ctx, hold.account_id,
                                                                                                owners),
                                    status=hold.status)))
    if settlement.capture_account_id is not None:
        fields.append(("captures into", _account_link(ctx, settlement.capture_account_id, owners)))
    if settlement.reverse_transaction_id is not None:
        fields.append(("reverses", html('<a href="{href}">transaction {id}</a>', id=settlement.reverse_transaction_id,
                                        href=ctx.url(f"/transactions/{settlement.reverse_transaction_id}"))))
    written = [html('<a href="{href}" class="ledger-tx">transaction {id}</a> ({kind})', id=int(row[2]), kind=row[1],
                    href=ctx.url(f"/transactions/{row[2]}")) for row in operations if row[2] is not None]
    released = [row[1] for row in operations if row[2] is None]
    parts = written + [html("{kind} (no journal entry)", kind=kind) for kind in released]
    if parts:
        fields.append(("ledger", join(parts, ", ")))
    return fields


def task_detail(ctx: Context, task_id: str) -> Response:
    """The page of the task whose id is in the URL (see :func:`task_page`)."""
    return task_page(ctx, int(task_id))


def task_action(ctx: Context, task_id_text: str, action: str) -> Response:
    """Retry, cancel, release or resolve a task, recorded with the actor and
    the reason given (required)."""
    task_id = int(task_id_text)
    form = ctx.request.form()
    note = form.get("note", "").strip()
    if not note:
        return task_page(ctx, task_id, status=400, error="A reason is required: it is recorded with your name.")
    if len(note.encode("utf-8")) > NOTE_BYTES_MAX:
        return task_page(ctx, task_id, status=400, error=f"The reason is at most {NOTE_BYTES_MAX} bytes.",
                         note=note)
    tasks = ctx.db.tasks
    done = action
    try:
        if action == "resolve":
            outcome = form.get("outcome")
            if outcome not in ("applied", "not_applied"):
                return task_page(ctx, task_id, status=400, note=note,
                                 error="Say whether the provider applied it: choose applied or not applied.")
            settle = form.get("settle", "as_enqueued")
            capture_into: Optional[int] = None
            if outcome == "applied" and settle == "capture_into":
                account_text = form.get("capture_into", "").strip()
                if not account_text.isdigit() or len(account_text) > 18:
                    return task_page(ctx, task_id, status=400, note=note,
                                     error="Give the id of the account to capture the hold into.")
                capture_into = int(account_text)
            by_hand = outcome == "applied" and settle == "by_hand"
            tasks.resolve(task_id, applied=outcome == "applied", actor=ctx.actor, note=note,
                          capture_into=capture_into, settled_by_hand=by_hand)
            done = ("resolve_applied_captured_into" if capture_into is not None else
                    "resolve_applied_settled_by_hand" if by_hand else f"resolve_{outcome}")
        else:
            run: Callable[..., None] = {"retry": tasks.retry, "cancel": tasks.cancel,
                                        "release": tasks.release}[action]
            run(task_id, actor=ctx.actor, note=note)
    except (payq.InvalidState, payq.InvalidArgument, payq.UnknownAccount, payq.AccountClosed,
            payq.CurrencyMismatch) as exc:
        # A settlement that cannot run as asked is refused with nothing changed.
        return task_page(ctx, task_id, status=409, error=f"Refused: {exc}", note=note)
    log.info("%s", json.dumps({"event": "dashboard_action", "actor": ctx.actor, "task_id": task_id,
                               "action": done}))
    return Response.redirect(ctx.url(f"/tasks/{task_id}", done=done))


# ---------------------------------------------------------------- ledger


def accounts_list(ctx: Context) -> Response:
    """Accounts with balances, by id, optionally of one owner."""
    owner = _text(ctx.request, "owner")
    after_id = _int(ctx.request, "after_id", 0)
    if owner is None:
        accounts = ctx.read.ledger.accounts(after_id=after_id, limit=PAGE_SIZE)
    else:
        accounts = _accounts_by_owner_prefix(ctx, owner, after_id)
    rows = []
    for a in accounts:
        flags = [name for name, on in (("system: may go negative", a.allow_negative),
                                       ("deferred credit", a.deferred_credit), ("closed", a.closed)) if on]
        rows.append([html('<a href="{href}">{id}</a>', href=ctx.url(f"/accounts/{a.id}"), id=a.id),
                     a.owner, a.namespace, a.currency, str(a.balance), str(a.held), str(a.available),
                     str(a.pending), ", ".join(flags)])
    pager = Html("")
    if len(accounts) == PAGE_SIZE:
        pager = html('<p class="pager"><a href="{href}" rel="next">Next page</a></p>',
                     href=ctx.url("/accounts", owner=owner, after_id=accounts[-1].id))
    content = html(
        '<form method="get" action="{action}" class="filters"><label>Owner (or its start: user:) '
        '<input name="owner" value="{owner}" maxlength="200"></label> <button type="submit">Filter</button> '
        '<a href="{action}">clear</a></form>{table}{pager}',
        action=ctx.url("/accounts"), owner=owner or "",
        table=table(["id", "owner", "namespace", "currency", "balance", "held", "available", "pending", "flags"],
                    rows, empty="no account", numeric=(4, 5, 6, 7)), pager=pager)
    return ctx.render("Accounts", content)


def _accounts_by_owner_prefix(ctx: Context, prefix: str, after_id: int) -> List["payq.Account"]:
    """A page of accounts whose owner starts with ``prefix`` (``user:`` finds
    every user's), by id."""
    if len(prefix) > OWNER_CHARS_MAX:
        raise HttpError(400, f"an owner is at most {OWNER_CHARS_MAX} characters")
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with ctx.read.transaction() as t:
        ids = [int(queries.cell(r[0]))
               for r in t.execute(queries.ACCOUNTS_BY_OWNER_PREFIX, [pattern, after_id, PAGE_SIZE])]
    return [ctx.read.ledger.get_account(account_id) for account_id in ids]


def account_detail(ctx: Context, account_id_text: str) -> Response:
    """An account's balances and its journal, newest page first: before,
    amount and after of every entry."""
    account = ctx.read.ledger.get_account(int(account_id_text))
    # Sequences run 1..seq without gaps (the audit checks it), so the newest
    # page starts right after seq - PAGE_SIZE.
    newest_after = max(0, account.seq - PAGE_SIZE)
    after_seq = _int(ctx.request, "after_seq", newest_after, high=max(account.seq, 0))
    entries = ctx.read.ledger.history(account, after_seq=after_seq, limit=PAGE_SIZE)
    counterparts: Dict[int, str] = {}
    if entries:
        with ctx.read.transaction() as t:
            found = t.execute(queries.JOURNAL_COUNTERPARTS,
                              ["{" + ",".join(str(e.transaction_id) for e in entries) + "}", account.id])
        counterparts = {int(queries.cell(r[0])): queries.cell(r[1]) for r in found}
    rows = [[e.seq, when(e.created_at),
             html('<a href="{href}">{id}</a>', href=ctx.url(f"/transactions/{e.transaction_id}"),
                  id=e.transaction_id), counterparts.get(e.transaction_id, ""),
             "" if e.balance_before is None else str(e.balance_before), str(e.amount),
             "" if e.balance_after is None else str(e.balance_after)] for e in reversed(entries)]
    links = []
    if after_seq + len(entries) < account.seq:
        links.append(html('<a href="{href}">Newest</a>', href=ctx.url(f"/accounts/{account.id}")))
    if after_seq > 0:
        links.append(html('<a href="{href}">Older</a>',
                          href=ctx.url(f"/accounts/{account.id}", after_seq=max(0, after_seq - PAGE_SIZE))))
    fields = [("owner", account.owner), ("namespace", account.namespace), ("currency", account.currency),
              ("balance", str(account.balance)), ("held", str(account.held)), ("available", str(account.available)),
              ("pending credits", str(account.pending)), ("overdraft", str(account.overdraft)),
              ("entries", account.seq), ("may go negative", "yes" if account.allow_negative else "no"),
              ("deferred credit", "yes" if account.deferred_credit else "no"),
              ("closed", "yes" if account.closed else "no")]
    content = html(
        '<dl class="fields">{fields}</dl><h2>Journal</h2>'
        '<p class="hint">Entries {first}&ndash;{last} of {total}, newest first.</p>{table}'
        '<p class="pager">{links}</p>',
        fields=join(html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in fields),
        first=after_seq + 1 if entries else 0, last=after_seq + len(entries), total=account.seq,
        table=table(["seq", "at", "transaction", "with", "before", "amount", "after"], rows, empty="no entries",
                    numeric=(0, 4, 5, 6)),
        links=join(links, " "))
    return ctx.render(f"Account {account.id}", content)


def transaction_detail(ctx: Context, transaction_id_text: str) -> Response:
    """One ledger transaction: header, metadata and its legs."""
    tx = ctx.read.ledger.transaction(int(transaction_id_text))
    owners = _account_owners(ctx, (e.account_id for e in tx.entries))
    rows = [[_account_link(ctx, e.account_id, owners),
             "-" if e.seq is None else e.seq, str(e.amount),
             "pending" if e.balance_after is None else str(e.balance_after)] for e in tx.entries]
    links = []
    if tx.reverses_id is not None:
        links.append(("reverses", html('<a href="{href}">{id}</a>', href=ctx.url(f"/transactions/{tx.reverses_id}"),
                                       id=tx.reverses_id)))
    fields = [("key", tx.key), ("kind", tx.kind), ("created", when(tx.created_at)), *links,
              ("hold", "-" if tx.hold_id is None else tx.hold_id)]
    content = html(
        '<dl class="fields">{fields}</dl><h2>Entries</h2>{table}<h2>Metadata</h2><pre>{metadata}</pre>',
        fields=join(html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in fields),
        table=table(["account", "seq", "amount", "balance after"], rows, numeric=(1, 2, 3)),
        metadata=json_block(tx.metadata))
    return ctx.render(f"Transaction {tx.id}", content)


def audit_page(ctx: Context) -> Response:
    """The ledger audit: every invariant, every violation. Runs when the
    last result is older than a minute, or on request."""
    result = ctx.audits.run(force=ctx.request.query.get("run") == "1")
    report = result.report
    violations = [[v.check, v.subject, v.detail] for v in report.violations[:VIOLATIONS_SHOWN_MAX]]
    more = ""
    if len(report.violations) > VIOLATIONS_SHOWN_MAX:
        more = f"... and {len(report.violations) - VIOLATIONS_SHOWN_MAX} more (payq ledger audit lists them all)"
    verdict = "clean" if report.ok else f"{len(report.violations)} violation(s)"
    content = html(
        '<p id="audit-status" class="audit-{cls}">Ledger audit: <strong>{verdict}</strong></p>'
        "<p>Checked {accounts} account(s) and {entries} journal entries; finished {at} in {elapsed}.</p>"
        '{table}<p>{more}</p><p><a href="{rerun}">Run it again</a></p>'
        '<p class="hint">Checks: balance = sum of entries = last balance_after; sequences without gaps; '
        "before + amount = after for every entry; held = sum of active holds; every transaction and every "
        "currency sums to zero; no normal account below its floor; no reversal beyond its original.</p>",
        cls="ok" if report.ok else "bad", verdict=verdict, accounts=report.accounts_checked,
        entries=report.entries_checked, at=when(result.finished_at), elapsed=duration(result.elapsed),
        table=table(["check", "subject", "detail"], violations, empty="no violation") if violations else "",
        more=more, rerun=ctx.url("/audit", run=1))
    return ctx.render("Audit", content)
