"""Queues: each queue's state and limits, pause and resume, its limits
changed, each action recorded with the operator and a reason in the queue
action log (``db.queues.actions``), which the page shows."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Optional

import payq
from payq.dashboard.render import Html, duration, html, join, table, when
from payq.dashboard.views import NOTE_BYTES_MAX, Context
from payq.dashboard.wsgi import HttpError, Response

__all__ = ["queues_list", "queue_detail", "queue_action", "QUEUE_ACTIONS_SHOWN", "WINDOW_S_MAX"]

log = logging.getLogger("payq.dashboard")

QUEUE_ACTIONS_SHOWN = 100
"""The newest queue actions a queue's page lists."""
WINDOW_S_MAX = 366 * 24 * 3600
"""A rate or amount window is at most 366 days (what payq accepts)."""
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

_DONE = {
    "pause": "Paused: workers claim nothing from this queue until it is resumed; running tasks finish.",
    "resume": "Resumed: workers claim from this queue again.",
    "limits": "Limits saved.",
}


def _queue(ctx: Context, name: str) -> "payq.outbox.QueueInfo":
    if not _QUEUE_NAME.match(name):
        raise HttpError(404, "No such queue.")
    for info in ctx.read.queues.list():
        if info.name == name:
            return info
    raise HttpError(404, f"No queue named {name!r}: it has no settings and no tasks.")


def queues_list(ctx: Context) -> Response:
    """Every queue with its state and limits, and the newest queue actions."""
    queues = ctx.read.queues.list()
    rows = [[html('<a href="{href}">{name}</a>', href=ctx.url(f"/queues/{q.name}"), name=q.name),
             html('<span class="qstate qstate-{s}">{s}</span>', s=q.status), q.pending, q.running, q.dead,
             ", ".join(q.limits_text()) or "-"] for q in queues]
    content = html("{table}<h2>Queue actions</h2>{log}",
                   table=table(["queue", "state", "pending", "running", "dead", "limits"], rows,
                               empty="no queues yet", numeric=(2, 3, 4)),
                   log=_action_log(ctx, None))
    return ctx.render("Queues", content)


def _action_log(ctx: Context, name: Optional[str]) -> Html:
    actions = ctx.read.queues.actions(name, limit=QUEUE_ACTIONS_SHOWN)
    rows = [[when(a.created_at), html('<a href="{href}">{q}</a>', href=ctx.url(f"/queues/{a.queue}"), q=a.queue),
             html("<strong>{a}</strong>", a=a.action), html("<code>{actor}</code>", actor=a.actor), a.note,
             _detail_text(a.detail)] for a in actions]
    return html('<div id="queue-actions">{t}</div>',
                t=table(["at", "queue", "action", "by", "reason", "set"], rows, empty="no queue action recorded"))


def _detail_text(detail: Dict[str, Any]) -> str:
    if "pause_ms" in detail:
        return f"for {duration(timedelta(milliseconds=int(detail['pause_ms'])))}"
    return ", ".join(f"{key} {value}" for key, value in sorted(detail.items()))


def _reason_field(note: str = "") -> Html:
    return html('<label>Reason (recorded with your name) <input name="note" required maxlength="2000" size="50" '
                'value="{note}"></label>', note=note)


def _number(value: Optional[Any]) -> str:
    return "" if value is None else str(value)


def _limits_form(ctx: Context, q: "payq.outbox.QueueInfo", form: Optional[Dict[str, str]]) -> Html:
    def value(field_name: str, current: Optional[Any]) -> str:
        return form.get(field_name, "") if form is not None else _number(current)

    rate_count, rate_window = (q.rate[0], q.rate[1].total_seconds()) if q.rate else (None, None)
    amount, amount_currency, amount_window = ((q.amount[0].decimal, q.amount[0].currency,
                                               q.amount[1].total_seconds()) if q.amount else (None, None, None))
    return html(
        '<form method="post" action="{action}" class="action" id="form-limits">{csrf}<h3>Limits</h3>'
        '<p>Empty means unlimited. They hold across every worker on every machine.</p>'
        '<label>Concurrency (running at once) <input name="concurrency" inputmode="numeric" '
        'pattern="[0-9]{{1,9}}" value="{concurrency}"></label>'
        '<label>Rate: starts <input name="rate_count" inputmode="numeric" pattern="[0-9]{{1,9}}" size="8" '
        'value="{rate_count}"> per <input name="rate_window_s" inputmode="decimal" size="8" value="{rate_window}"> s'
        '</label>'
        '<label>Amount: at most <input name="amount" inputmode="decimal" size="12" value="{amount}"> '
        '<input name="amount_currency" size="5" maxlength="12" placeholder="CNY" value="{amount_currency}"> per '
        '<input name="amount_window_s" inputmode="decimal" size="8" value="{amount_window}"> s</label>'
        '<label>Weight (share among queues a worker serves) <input name="weight" inputmode="numeric" '
        'pattern="[0-9]{{1,4}}" size="5" value="{weight}"></label>'
        "{reason}"
        '<button type="submit">Save limits</button></form>',
        action=ctx.url(f"/queues/{q.name}/limits"), csrf=ctx.csrf_field(),
        concurrency=value("concurrency", q.concurrency), rate_count=value("rate_count", rate_count),
        rate_window=value("rate_window_s", None if rate_window is None else f"{rate_window:g}"),
        amount=value("amount", amount), amount_currency=value("amount_currency", amount_currency),
        amount_window=value("amount_window_s", None if amount_window is None else f"{amount_window:g}"),
        weight=value("weight", q.weight), reason=_reason_field(form.get("note", "") if form else ""))


def queue_page(ctx: Context, name: str, *, status: int = 200, error: Optional[str] = None,
               form: Optional[Dict[str, str]] = None) -> Response:
    """One queue: state, depth and limits, pause or resume, the limits
    form and the queue's action log."""
    q = _queue(ctx, name)
    fields = [("state", html('<span class="qstate qstate-{s}" id="queue-state">{s}</span>', s=q.status)),
              ("back-pressure until", when(q.paused_until) if q.paused_until else "-"),
              ("pending", html('<a href="{href}">{n}</a>', href=ctx.url("/tasks", queue=q.name, state="pending"),
                               n=q.pending)),
              ("due", q.runnable), ("running", q.running), ("held", q.held), ("dead", q.dead),
              ("needs review", q.needs_review), ("lag", duration(q.oldest_runnable_age)),
              ("started in the last minute", q.started_last_minute),
              ("limits", ", ".join(q.limits_text()) or "none")]
    toggle = "resume" if q.paused else "pause"
    explain = ("Workers claim nothing from this queue until it is resumed; running tasks finish."
               if toggle == "pause" else "Workers claim from this queue again (this also ends a back-pressure pause).")
    pause_form = html(
        '<form method="post" action="{action}" class="action" id="form-{toggle}">{csrf}<h3>{label}</h3><p>{explain}</p>'
        '{reason}<button type="submit">{label}</button></form>',
        action=ctx.url(f"/queues/{q.name}/{toggle}"), toggle=toggle, csrf=ctx.csrf_field(),
        label=toggle.capitalize(), explain=explain,
        reason=_reason_field(form.get("note", "") if form and form.get("do") == toggle else ""))
    content = html(
        '<dl class="fields">{fields}</dl><p><a href="{tasks}">Tasks of this queue</a></p>'
        '<h2>Actions</h2><div class="forms">{pause}{limits}</div><h2>Queue actions</h2>{log}',
        fields=join(html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in fields),
        tasks=ctx.url("/tasks", queue=q.name), pause=pause_form, limits=_limits_form(ctx, q, form),
        log=_action_log(ctx, q.name))
    notice = _DONE.get(ctx.request.query.get("done", ""))
    return ctx.render(f"Queue {q.name}", content, status=status, notice=notice, error=error)


def queue_detail(ctx: Context, name: str) -> Response:
    """The page of the queue named in the URL (see :func:`queue_page`)."""
    return queue_page(ctx, name)


def _whole(form: Dict[str, str], name: str, label: str, high: int) -> Optional[int]:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= high:
        raise ValueError(f"{label} is a whole number from 1 to {high}")
    return int(text)


def _seconds(form: Dict[str, str], name: str, label: str) -> Optional[timedelta]:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        seconds = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{label} is a number of seconds") from None
    if not seconds.is_finite() or not 0 < seconds <= WINDOW_S_MAX or seconds * 1000 != int(seconds * 1000):
        raise ValueError(f"{label} is more than 0 and at most {WINDOW_S_MAX} seconds, in whole milliseconds")
    return timedelta(milliseconds=int(seconds * 1000))


def _limits(form: Dict[str, str]) -> Dict[str, Any]:
    """The keywords of ``db.queues.configure`` from the limits form;
    ValueError naming the field that is wrong."""
    limits: Dict[str, Any] = {"concurrency": _whole(form, "concurrency", "Concurrency", 2**31 - 1)}
    rate_count = _whole(form, "rate_count", "The rate's count", 2**31 - 1)
    rate_window = _seconds(form, "rate_window_s", "The rate's window")
    if (rate_count is None) != (rate_window is None):
        raise ValueError("A rate needs both a count and a window")
    limits["rate"] = None if rate_count is None else (rate_count, rate_window)
    amount_text = form.get("amount", "").strip()
    currency = form.get("amount_currency", "").strip().upper()
    amount_window = _seconds(form, "amount_window_s", "The amount's window")
    if not amount_text and not currency and amount_window is None:
        limits["amount"] = None
    elif not (amount_text and currency and amount_window is not None):
        raise ValueError("An amount limit needs an amount, a currency and a window")
    else:
        limits["amount"] = (payq.Money(amount_text, currency), amount_window)  # InvalidAmount, UnknownCurrency
    weight = _whole(form, "weight", "The weight", 1000)
    limits["weight"] = 1 if weight is None else weight
    return limits


def queue_action(ctx: Context, name: str, action: str) -> Response:
    """Pause, resume or set the limits of a queue, recorded with the actor
    and the reason given (required)."""
    _queue(ctx, name)  # 404 for a queue that does not exist
    form = dict(ctx.request.form())
    form["do"] = action
    note = form.get("note", "").strip()
    if not note:
        return queue_page(ctx, name, status=400, form=form,
                          error="A reason is required: it is recorded with your name.")
    if len(note.encode("utf-8")) > NOTE_BYTES_MAX:
        return queue_page(ctx, name, status=400, form=form, error=f"The reason is at most {NOTE_BYTES_MAX} bytes.")
    queues = ctx.db.queues
    try:
        if action == "limits":
            try:
                limits = _limits(form)
            except ValueError as exc:
                return queue_page(ctx, name, status=400, form=form, error=str(exc))
            queues.configure(name, actor=ctx.actor, note=note, **limits)
        elif action == "pause":
            queues.pause(name, actor=ctx.actor, note=note)
        else:
            queues.resume(name, actor=ctx.actor, note=note)
    except (payq.InvalidArgument, payq.InvalidAmount, payq.UnknownCurrency) as exc:
        return queue_page(ctx, name, status=400, form=form, error=f"Refused: {exc}")
    log.info("%s", json.dumps({"event": "dashboard_queue_action", "actor": ctx.actor, "queue": name,
                               "action": action}))
    return Response.redirect(ctx.url(f"/queues/{name}", done=action))
