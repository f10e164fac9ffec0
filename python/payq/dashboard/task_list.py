"""Task lists: newest first (or by next run, finished time, oldest), by
state, queue, kind and key, searched by payload field, a page at a time
with a jump to a page or to a task; selected tasks retried or cancelled
at once with one reason; refreshed live by the page's script."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

import payq
from payq.dashboard.encrypted import error_listed
from payq.dashboard.queries import SEARCH_TIMEOUT, TASK_ORDER_LABELS, TASK_ORDERS, TASKS_PAGE, cell
from payq.dashboard.render import Html, html, join, table, when
from payq.dashboard.views import NOTE_BYTES_MAX, Context, _int, _text
from payq.dashboard.wsgi import HttpError, Response
from payq.outbox import QUEUE_NAME_MAX, TASK_STATES

__all__ = ["tasks_list", "tasks_bulk", "payload_filter", "PAGE_SIZE", "PAGE_SIZE_MAX", "PAGE_NUMBER_MAX",
           "BULK_COUNT_MAX", "LIVE_REFRESH_S"]

log = logging.getLogger("payq.dashboard")

PAGE_SIZE = 50
PAGE_SIZE_MAX = 500
PAGE_NUMBER_MAX = 2000
"""Pages are found by offset: deeper than this, narrow the filters instead."""
BULK_COUNT_MAX = 200
"""Tasks one bulk action may name."""
LIVE_REFRESH_S = 5
"""How often a task list refreshes itself while live refresh is on."""
SEARCH_CHARS_MAX = 500
SEARCH_DEPTH_MAX = 8
ERROR_CHARS_SHOWN = 120
LIVE_STATES = ("pending", "running", "held", "dead", "needs_review")
BULK_ACTIONS = {"retry": "retried", "cancel": "cancelled"}


@dataclass(frozen=True)
class _Row:
    """A task as the list shows it."""

    id: int
    state: str
    queue: str
    kind: str
    attempt: int
    attempt_max: int
    idempotency_key: str
    amount: str
    worker_id: str
    error: str
    created_at: Optional[datetime]
    run_at: Optional[datetime]
    finished_at: Optional[datetime]


def _timestamp(text: Optional[str]) -> Optional[datetime]:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _amount(minor: Optional[str], currency: Optional[str]) -> str:
    if minor is None or currency is None:
        return ""
    try:
        return str(payq.Money(int(minor), currency))  # an int is minor units
    except payq.Error:  # a currency this process does not know: the raw minor units
        return f"{minor} {currency} (minor units)"


def payload_filter(text: Optional[str]) -> Optional[Tuple[str, Optional[str]]]:
    """The JSON documents a payload search contains, from what an operator
    typed: ``order_id=123`` or ``payload.customer.id=7`` (a path of keys,
    ``payload.`` optional) or a JSON object (``{"order_id": 123}``). A
    value that reads as a JSON number, boolean or null matches that value
    or the same text as a string (``123`` finds ``123`` and ``"123"``).
    Returns (document, alternative or None); HttpError 400 when the text is
    none of these."""
    if text is None:
        return None
    text = text.strip()
    if len(text) > SEARCH_CHARS_MAX:
        raise HttpError(400, f"a payload search is at most {SEARCH_CHARS_MAX} characters")
    if text.startswith("{"):
        try:
            document = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            raise HttpError(400, "the payload search is not a JSON object") from None
        if not isinstance(document, dict):
            raise HttpError(400, "the payload search is not a JSON object")
        return _storable(document), None
    path_text, sep, value_text = text.partition("=")
    path = path_text.strip().split(".")
    if path and path[0] == "payload" and len(path) > 1:
        path = path[1:]
    if not sep or not all(path) or len(path) > SEARCH_DEPTH_MAX:
        raise HttpError(400, "search the payload as field=value, e.g. order_id=123 or customer.id=7, "
                             "or give a JSON object")
    value_text = value_text.strip()
    candidates: List[Any] = [value_text]
    try:
        parsed = json.loads(value_text, parse_constant=_no_constant)
    except ValueError:
        parsed = value_text
    if not isinstance(parsed, (dict, list)) and parsed != value_text:
        candidates = [parsed, value_text]
    elif isinstance(parsed, (dict, list)):
        candidates = [parsed]
    documents = []
    for value in candidates:
        for key in reversed(path):
            value = {key: value}
        documents.append(_storable(value))
    return documents[0], (documents[1] if len(documents) > 1 else None)


def _no_constant(name: str) -> Any:
    """NaN and Infinity are no JSON PostgreSQL reads: such a value is text."""
    raise ValueError(f"{name} is not JSON")


def _storable(value: Any) -> str:
    """``value`` as JSON text. No payload can hold a NUL (PostgreSQL's jsonb
    refuses it), so a search for one is a mistake, answered as one rather
    than as a database error."""
    pending = [value]
    while pending:  # bounded by the search text: each value is visited once
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            raise HttpError(400, "a payload search cannot contain a NUL character")
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return json.dumps(value)


def _rows(ctx: Context, chosen: Dict[str, Optional[str]], order: str, limit: int, offset: int) -> List[_Row]:
    search = payload_filter(chosen["payload"])
    with ctx.read.transaction() as t:
        if search is not None:
            t.execute(SEARCH_TIMEOUT)
        try:
            found = t.execute(TASKS_PAGE(order), [chosen["state"], chosen["queue"], chosen["kind"], chosen["key"],
                                                  None if search is None else search[0],
                                                  None if search is None else search[1], limit, offset])
        except payq.DatabaseError as exc:
            if search is not None and "statement timeout" in str(exc):
                raise HttpError(400, "The payload search took too long: narrow it by state, queue or kind.") \
                    from None
            raise
    return [_Row(int(cell(r[0])), cell(r[1]), cell(r[2]), cell(r[3]), int(cell(r[4])), int(cell(r[5])), cell(r[6]),
                 _amount(r[7], r[8]), r[9] or "", r[10] or "", _timestamp(r[11]), _timestamp(r[12]),
                 _timestamp(r[13])) for r in found]


def _filters(ctx: Context, counts: Dict[str, int], chosen: Dict[str, Optional[str]], order: str, limit: int) -> Html:
    keep = {"queue": chosen["queue"], "kind": chosen["kind"], "payload": chosen["payload"],
            "sort": None if order == "newest" else order}
    tabs = [html('<a href="{href}" class="{cls}">all</a>', href=ctx.url("/tasks", **keep),
                 cls="current" if chosen["state"] is None else "")]
    for state in TASK_STATES:
        label = f"{state} ({counts[state]})" if state in counts else state
        tabs.append(html('<a href="{href}" class="{cls}">{label}</a>', href=ctx.url("/tasks", state=state, **keep),
                         cls="current" if chosen["state"] == state else "", label=label))
    states = join(html('<option value="{v}"{sel}>{label}</option>', v=s, label=s or "any state",
                       sel=Html(" selected") if (chosen["state"] or "") == s else Html(""))
                  for s in ("", *TASK_STATES))
    orders = join(html('<option value="{v}"{sel}>{label}</option>', v=name, label=TASK_ORDER_LABELS[name],
                       sel=Html(" selected") if order == name else Html("")) for name in TASK_ORDERS)
    return html(
        '<nav class="tabs">{tabs}</nav>'
        '<form method="get" action="{action}" class="filters" id="filters">'
        '<label>State <select name="state">{states}</select></label>'
        '<label>Queue <input name="queue" value="{queue}" maxlength="{queue_max}"></label>'
        '<label>Kind <input name="kind" value="{kind}" maxlength="200"></label>'
        '<label>Key <input name="key" value="{key}" maxlength="255" placeholder="unique or idempotency key"></label>'
        '<label>Payload <input name="payload" value="{payload}" maxlength="{search_max}" '
        'placeholder="order_id=123" title="field=value (a path of keys: customer.id=7) or a JSON object"></label>'
        '<label>Sort <select name="sort">{orders}</select></label>'
        '<input type="hidden" name="limit" value="{limit}">'
        '<button type="submit">Filter</button> <a href="{action}">clear</a></form>'
        '<form method="get" action="{action}" class="filters jump" id="jump">'
        '<label>Go to task <input name="jump" inputmode="numeric" pattern="[0-9]{{1,18}}" size="10" '
        'placeholder="id"></label><button type="submit">Open</button></form>',
        tabs=join(tabs, " "), action=ctx.url("/tasks"), states=states, queue=chosen["queue"] or "",
        kind=chosen["kind"] or "", key=chosen["key"] or "", payload=chosen["payload"] or "",
        search_max=SEARCH_CHARS_MAX, orders=orders, queue_max=QUEUE_NAME_MAX, limit=limit if limit != PAGE_SIZE else "")


def _pager(ctx: Context, chosen: Dict[str, Optional[str]], order: str, limit: int, page: int, full: bool) -> Html:
    def href(number: int) -> str:
        return ctx.url("/tasks", **chosen, sort=None if order == "newest" else order,
                       limit=None if limit == PAGE_SIZE else limit, page=None if number == 1 else number)

    links = []
    if page > 1:
        links.append(html('<a href="{href}">First page</a>', href=href(1)))
        links.append(html('<a href="{href}" rel="prev">Previous page</a>', href=href(page - 1)))
    if full and page < PAGE_NUMBER_MAX:
        links.append(html('<a href="{href}" rel="next">Next page</a>', href=href(page + 1)))
    hidden = join(html('<input type="hidden" name="{k}" value="{v}">', k=k, v=v)
                  for k, v in {**chosen, "sort": None if order == "newest" else order,
                               "limit": None if limit == PAGE_SIZE else limit}.items() if v)
    return html(
        '<div class="pager"><span>Page {page}</span> {links}'
        '<form method="get" action="{action}" class="page-jump">{hidden}'
        '<label>page <input name="page" inputmode="numeric" pattern="[0-9]{{1,4}}" size="4" value="{page}">'
        '</label><button type="submit">Go</button></form></div>',
        page=page, links=join(links, " "), action=ctx.url("/tasks"), hidden=hidden)


def _bulk_form(ctx: Context, body: Html) -> Html:
    return html(
        '<form method="post" action="{action}" id="bulk" class="bulk">{csrf}{body}'
        '<fieldset class="bulk-actions"><legend>Selected tasks</legend>'
        '<label>Action <select name="do" required><option value="retry">retry (dead or cancelled)</option>'
        '<option value="cancel">cancel (held or pending, never run)</option></select></label>'
        '<label>Reason (recorded with your name) <input name="note" required maxlength="2000" size="40"></label>'
        '<button type="submit">Apply to selected</button> '
        '<span class="hint">at most {max} at once; each task is acted on alone, and refusals are listed.</span>'
        "</fieldset></form>",
        action=ctx.url("/tasks/bulk"), csrf=ctx.csrf_field(), body=body, max=BULK_COUNT_MAX)


def tasks_list(ctx: Context) -> Response:
    """Tasks by state, queue, kind, key and payload, sorted, a page at a
    time; ``jump`` opens a task by id."""
    request = ctx.request
    jump = _text(request, "jump")
    if jump is not None:
        if not jump.isdigit() or len(jump) > 18:
            raise HttpError(400, "go to a task by its id (digits)")
        ctx.read.tasks.get(int(jump))  # UnknownTask: 404
        return Response.redirect(ctx.url(f"/tasks/{int(jump)}"))
    chosen = {name: _text(request, name) for name in ("state", "queue", "kind", "key", "payload")}
    if chosen["state"] is not None and chosen["state"] not in TASK_STATES:
        raise HttpError(400, f"state is one of {', '.join(TASK_STATES)}")
    order = _text(request, "sort") or "newest"
    if order not in TASK_ORDERS:
        raise HttpError(400, f"sort is one of {', '.join(TASK_ORDERS)}")
    limit = _int(request, "limit", PAGE_SIZE, low=1, high=PAGE_SIZE_MAX)
    page = _int(request, "page", 1, low=1, high=PAGE_NUMBER_MAX)
    rows = _rows(ctx, chosen, order, limit, (page - 1) * limit)
    cells = [[html('<input type="checkbox" name="task" value="{id}" aria-label="select task {id}">', id=r.id),
              html('<a href="{href}">{id}</a>', href=ctx.url(f"/tasks/{r.id}"), id=r.id),
              html('<span class="state state-{s}">{s}</span>', s=r.state), r.queue, r.kind,
              f"{r.attempt}/{r.attempt_max}", r.idempotency_key, r.amount, when(r.created_at),
              when(r.run_at) if r.state in ("pending", "held") else Html("&ndash;"), when(r.finished_at),
              _shorten(error_listed(r.error))] for r in rows]
    select_all = Html('<input type="checkbox" id="select-all" aria-label="select every task on this page">')
    listing = table([select_all, "id", "state", "queue", "kind", "try", "idempotency key", "amount", "created",
                     "next run", "finished", "error"], cells, empty="no task matches")
    task_list = html('<div id="task-list" data-refresh-s="{s}">{bulk}{pager}</div>', s=LIVE_REFRESH_S,
                     bulk=_bulk_form(ctx, listing), pager=_pager(ctx, chosen, order, limit, page, len(rows) == limit))
    if _text(request, "fragment") == "list":
        # The live refresh: only the list, without the counts (they read
        # every queue's depth, which a refresh every few seconds need not).
        return Response(200, task_list.encode("utf-8"))
    counts: Dict[str, int] = {}
    for q in ctx.read.queues.list():
        if chosen["queue"] is None or q.name == chosen["queue"]:
            for state in LIVE_STATES:
                counts[state] = counts.get(state, 0) + int(getattr(q, state))
    live = html('<p class="live"><label><input type="checkbox" id="live-refresh" checked> live: refresh every '
                '{s} s</label> <span class="hint" id="live-status"></span></p>', s=LIVE_REFRESH_S)
    content = html("{filters}{live}{task_list}", filters=_filters(ctx, counts, chosen, order, limit), live=live,
                   task_list=task_list)
    return ctx.render("Tasks", content)


def _shorten(text: Optional[str], limit: int = ERROR_CHARS_SHOWN) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _bulk_ids(values: Sequence[str]) -> List[int]:
    ids: List[int] = []
    for value in values:
        if not value.isdigit() or len(value) > 18:
            raise HttpError(400, "a selected task is named by its id")
        if int(value) not in ids:
            ids.append(int(value))
    return ids


def tasks_bulk(ctx: Context) -> Response:
    """Retry or cancel the selected tasks, each on its own (a refusal of
    one does not hold back the others), each recorded with the actor and
    the one reason given; answers with what happened to each."""
    form = ctx.request.form()
    action = form.get("do", "")
    if action not in BULK_ACTIONS:
        raise HttpError(400, "choose retry or cancel")
    ids = _bulk_ids(ctx.request.form_values("task"))
    note = form.get("note", "").strip()
    error = None
    if not ids:
        error = "Select at least one task."
    elif len(ids) > BULK_COUNT_MAX:
        error = f"Select at most {BULK_COUNT_MAX} tasks at once."
    elif not note:
        error = "A reason is required: it is recorded with your name."
    elif len(note.encode("utf-8")) > NOTE_BYTES_MAX:
        error = f"The reason is at most {NOTE_BYTES_MAX} bytes."
    if error is not None:
        return ctx.render("Tasks", html('<p><a href="{back}">Back to the tasks</a></p>', back=ctx.url("/tasks")),
                          status=400, error=error)
    run = ctx.db.tasks.retry if action == "retry" else ctx.db.tasks.cancel
    results: List[Tuple[int, Optional[str]]] = []
    for task_id in ids:  # bounded by BULK_COUNT_MAX
        try:
            run(task_id, actor=ctx.actor, note=note)
            results.append((task_id, None))
        except (payq.InvalidState, payq.InvalidArgument, payq.UnknownTask, payq.UnknownAccount,
                payq.AccountClosed, payq.CurrencyMismatch) as exc:
            results.append((task_id, str(exc)))
    done = [task_id for task_id, refusal in results if refusal is None]
    log.info("%s", json.dumps({"event": "dashboard_bulk_action", "actor": ctx.actor, "action": action,
                               "task_ids": done, "refused": len(results) - len(done)}))
    rows = [[html('<a href="{href}">{id}</a>', href=ctx.url(f"/tasks/{task_id}"), id=task_id),
             BULK_ACTIONS[action] if refusal is None else html('<span class="refused">refused</span>'),
             refusal or ""] for task_id, refusal in results]
    summary = f"{len(done)} of {len(results)} task(s) {BULK_ACTIONS[action]}."
    content = html('<div id="bulk-result">{table}</div><p><a href="{back}">Back to the tasks</a></p>',
                   table=table(["task", "result", "why refused"], rows), back=ctx.url("/tasks"))
    if len(done) == len(results):
        return ctx.render("Bulk action", content, notice=summary)
    return ctx.render("Bulk action", content, error=summary + " The others were refused: see below.")
