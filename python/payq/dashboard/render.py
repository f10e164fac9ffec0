"""HTML for the dashboard: every value is escaped on its way into markup.

:class:`Html` marks text that already is markup; :func:`html` fills a
template written in this package with values, escaping each one that is
not :class:`Html`. Data (task payloads, kinds, keys, errors, notes) only ever
reaches a page through :func:`html`, so a payload of ``<script>`` is shown,
never run. Templates are literals in code, never data.
"""

from __future__ import annotations

import html as _html
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional, Sequence

__all__ = ["Html", "escape", "html", "join", "json_block", "when", "duration", "table", "page", "login_page",
           "message_page"]


class Html(str):
    """Text that is markup already: never escaped again."""


def escape(value: object) -> Html:
    """``value`` as text inside markup or a quoted attribute."""
    if isinstance(value, Html):
        return value
    return Html(_html.escape("" if value is None else str(value), quote=True))


def html(template: str, **values: object) -> Html:
    """``template`` (a literal of this package) with ``{name}`` filled by
    the escaped values."""
    return Html(template.format(**{name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[Html], separator: str = "") -> Html:
    """Markup fragments, concatenated."""
    return Html(escape(separator).join(escape(part) for part in parts))


def json_block(value: Any) -> Html:
    """A JSON value, pretty-printed and escaped, for a ``<pre>``."""
    return escape(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def when(moment: Optional[datetime]) -> Html:
    """A timestamp in UTC to the second, with the exact value on hover."""
    if moment is None:
        return Html("&ndash;")
    utc = moment.astimezone(timezone.utc)
    return html('<time datetime="{exact}" title="{exact}">{short}</time>',
                exact=utc.isoformat(), short=utc.strftime("%Y-%m-%d %H:%M:%S"))


def duration(value: Optional[timedelta]) -> str:
    """``950 ms``, ``12.5 s``, ``3.2 min``, ``4.0 h``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], *, empty: str = "nothing here",
          numeric: Sequence[int] = ()) -> Html:
    """A table; each header and cell is escaped unless it is :class:`Html`. Columns
    whose index is in ``numeric`` are right-aligned."""
    head = join(html('<th{cls}>{h}</th>', h=h, cls=Html(' class="num"') if i in numeric else Html(""))
                for i, h in enumerate(headers))
    body_rows = [
        html("<tr>{cells}</tr>", cells=join(
            html("<td{cls}>{c}</td>", c=c, cls=Html(' class="num"') if i in numeric else Html(""))
            for i, c in enumerate(row)))
        for row in rows
    ]
    if not body_rows:
        body_rows = [html('<tr><td class="empty" colspan="{n}">{empty}</td></tr>', n=len(headers), empty=empty)]
    return html("<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
                head=head, body=join(body_rows))


def _document(title: str, static: str, body: Html) -> Html:
    return html(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        "<title>{title} &middot; payq</title>"
        '<link rel="stylesheet" href="{static}/dashboard.css">'
        '<script src="{static}/dashboard.js" defer></script>'
        "</head><body>{body}</body></html>\n",
        title=title, static=static, body=body)


def page(*, title: str, static: str, base: str, actor: str, logout: Optional[Html], content: Html,
         notice: Optional[str] = None, error: Optional[str] = None) -> Html:
    """A full page: navigation, who is logged in, a notice or an error, the content."""
    links = [("Overview", "/"), ("Tasks", "/tasks"), ("Queues", "/queues"), ("Workers", "/workers"),
             ("Accounts", "/accounts"), ("Audit", "/audit")]
    nav = join(html('<a href="{href}">{label}</a>', href=base + path, label=label) for label, path in links)
    banner = Html("")
    if notice:
        banner = html('<p class="notice" role="status">{text}</p>', text=notice)
    if error:
        banner = html('<p class="error" role="alert">{text}</p>', text=error)
    body = html(
        '<header><span class="brand">payq</span><nav>{nav}</nav>'
        '<span class="who">{actor}{logout}</span></header>'
        "<main><h1>{title}</h1>{banner}{content}</main>",
        nav=nav, actor=actor, logout=logout or Html(""), title=title, banner=banner, content=content)
    return _document(title, static, body)


def login_page(*, static: str, action: str, csrf: str, next_path: str, error: Optional[str] = None) -> Html:
    """The token login form."""
    banner = html('<p class="error" role="alert">{text}</p>', text=error) if error else Html("")
    body = html(
        '<main class="login"><h1>payq dashboard</h1>{banner}'
        '<form method="post" action="{action}" id="login">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<input type="hidden" name="next" value="{next}">'
        '<label>Operator name <input name="operator" required maxlength="64" autocomplete="username" '
        'title="letters, digits and . @ + - _"></label>'
        '<label>Token <input name="token" type="password" required autocomplete="current-password"></label>'
        '<button type="submit">Log in</button>'
        "</form><p class=\"hint\">The token was printed by <code>payq dashboard</code> when it started "
        "(or is <code>PAYQ_DASHBOARD_TOKEN</code>). Your name is recorded with every action you take.</p></main>",
        banner=banner, action=action, csrf=csrf, next=next_path)
    return _document("Log in", static, body)


def message_page(*, title: str, static: str, message: str, link: Optional[str] = None) -> Html:
    """A bare page for refusals (403, 404) outside the normal layout."""
    back = html('<p><a href="{href}">Back to the dashboard</a></p>', href=link) if link else Html("")
    body = html('<main class="login"><h1>{title}</h1><p class="error" role="alert">{message}</p>{back}</main>',
                title=title, message=message, back=back)
    return _document(title, static, body)
