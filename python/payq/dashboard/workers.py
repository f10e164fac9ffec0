"""What each worker is doing now: the tasks it runs (from the task rows:
a claim records the worker and its lease), the workers that finished
attempts lately, and which one holds the maintenance lease (renewed at
every maintenance tick: the leader's heartbeat)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from payq.dashboard import queries
from payq.dashboard.queries import cell
from payq.dashboard.render import Html, html, join, table, when
from payq.dashboard.views import Context
from payq.dashboard.wsgi import Response

__all__ = ["workers_page", "RUNNING_SHOWN_MAX", "RECENT_WINDOW_S", "RECENT_WORKERS_MAX"]

RUNNING_SHOWN_MAX = 1000
"""Running tasks the page lists at most (then: see the task list)."""
RECENT_WINDOW_S = 15 * 60
"""A worker that finished an attempt within this many seconds counts as seen."""
RECENT_WORKERS_MAX = 200


def _timestamp(text: Optional[str]) -> Optional[datetime]:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def workers_page(ctx: Context) -> Response:
    """Each worker with the tasks it runs now, its recent attempts and
    whether it leads maintenance."""
    with ctx.read.transaction() as t:
        running = t.execute(queries.RUNNING_BY_WORKER, [RUNNING_SHOWN_MAX])
        recent = t.execute(queries.WORKERS_RECENT, [RECENT_WINDOW_S, RECENT_WORKERS_MAX])
        leader = t.execute(queries.MAINTENANCE_LEADER)
    by_worker: Dict[str, List[Tuple[Any, ...]]] = {}
    for row in running:
        by_worker.setdefault(row[0] or "?", []).append(row)
    seen = {cell(row[0]): row for row in recent}
    leader_id = cell(leader[0][0]) if leader and leader[0][2] == "t" else None
    workers = sorted(set(by_worker) | set(seen) | ({leader_id} if leader_id else set()))
    sections = []
    for worker in workers:  # bounded: RUNNING_SHOWN_MAX rows and RECENT_WORKERS_MAX workers
        tasks = by_worker.get(worker, [])
        rows = [[html('<a href="{href}">{id}</a>', href=ctx.url(f"/tasks/{r[1]}"), id=r[1]), r[2], r[3],
                  f"{r[4]}/{r[5]}", when(_timestamp(r[6])),
                  html('<span class="{cls}">{until}</span>', cls="overdue" if r[8] == "t" else "",
                       until=when(_timestamp(r[7])))] for r in tasks]
        facts = [f"running {len(tasks)}"]
        if worker in seen:
            attempts, failed, last = seen[worker][1:4]
            facts.append(f"{attempts} attempt(s) in the last {RECENT_WINDOW_S // 60} min, {failed} not successful")
        badges = Html("")
        if worker == leader_id:
            badges = html(' <span class="badge" title="holds the maintenance lease until {until}">maintenance leader'
                          "</span>", until=leader[0][1])
        overdue = sum(1 for r in tasks if r[8] == "t")
        warning = Html("")
        if overdue:
            warning = html('<p class="error">{n} lease(s) ran out: the worker stopped answering during those '
                           "attempts; the rescuer hands them back as unknown.</p>", n=overdue)
        last_seen = when(_timestamp(seen[worker][3])) if worker in seen else Html("&ndash;")
        sections.append(html(
            '<section class="worker" data-worker="{w}"><h2><code>{w}</code>{badges}</h2>'
            '<p class="hint">{facts}; last finished {last}</p>{warning}{table}</section>',
            w=worker, badges=badges, facts="; ".join(facts), last=last_seen, warning=warning,
            table=table(["task", "queue", "kind", "try", "running since", "lease until"], rows,
                        empty="idle: no task running")))
    more = Html("")
    if len(running) >= RUNNING_SHOWN_MAX:
        more = html('<p class="hint">Only the first {n} running tasks are shown: <a href="{href}">all running '
                    "tasks</a>.</p>", n=RUNNING_SHOWN_MAX, href=ctx.url("/tasks", state="running"))
    content = html(
        '<p class="hint">Workers running tasks now, or that finished attempts in the last {m} minutes. A worker '
        "that is idle and has not finished anything lately is not listed: payq keeps no register of workers "
        "beyond their claims.</p>{more}{sections}",
        m=RECENT_WINDOW_S // 60, more=more,
        sections=join(sections) if sections else Html('<p id="no-workers">No worker ran anything lately.</p>'))
    return ctx.render("Workers", content)
