"""payq's web dashboard (python/payq/dashboard/): the WSGI application
called directly (login, CSRF and Origin checks, required reasons, escaping
of hostile data, filters, sorting, pages and jumps, payload search, bulk
actions, queue actions and their log, the workers page, tracebacks, links
from tasks to the ledger, journals, the audit, the throughput sampler and
its caption), the Django and Flask mounts, ``payq dashboard`` as operators
run it, and a real headless Chromium that logs in, retries a dead task and
resolves one that needs review, then searches, watches a list refresh
itself, acts in bulk, pauses a queue and follows a task to its account,
checked afterwards in the database.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import types
import urllib.request
from datetime import timedelta
from http.client import HTTPResponse
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit
from wsgiref.util import setup_testing_defaults

import pytest

import payq
from payq import Money, Settle
from payq._native import core
from payq.dashboard import DashboardApp, DashboardServer, make_app
from payq.dashboard.auth import CSRF_COOKIE, SESSION_COOKIE, TokenLogin
from payq.dashboard.throughput import Throughput

from appconn_support import django_order_model  # noqa: F401 (fixture)
from cdp import CdpError, Chromium, chromium_binary

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
ORIGIN = "http://127.0.0.1"
WAIT_S_MAX = 60.0
HOSTILE = "<script>alert('pwned')</script>"


# ---------------------------------------------------------------- a WSGI client


class Answer:
    """One response of the WSGI application."""

    def __init__(self, status: str, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = int(status.split()[0])
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")

    def header(self, name: str) -> Optional[str]:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookies(self) -> List[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def csrf(self, form_id: Optional[str] = None) -> str:
        """The CSRF token of the page's first form (or of form ``form_id``)."""
        text = self.text
        if form_id is not None:
            start = text.index(f'id="{form_id}"')
            text = text[start:]
        match = re.search(r'name="csrf" value="([^"]+)"', text)
        assert match, f"no CSRF field in:\n{self.text[:2000]}"
        return match.group(1)


class Client:
    """Calls a WSGI application as a browser would, keeping its cookies."""

    def __init__(self, app: Any, *, script_name: str = "", extra: Optional[Dict[str, str]] = None) -> None:
        self.app = app
        self.script_name = script_name
        self.extra = extra or {}
        self.cookies: Dict[str, str] = {}

    def request(self, method: str, path: str, form: Optional[Dict[str, str]] = None,
                headers: Optional[Dict[str, str]] = None, pairs: Optional[List[Tuple[str, str]]] = None) -> Answer:
        target = urlsplit(path)
        body = urlencode(pairs if pairs is not None else (form or {})).encode()
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": self.script_name, "PATH_INFO": target.path,
            "QUERY_STRING": target.query, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        }
        if method == "POST":
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        environ.update(self.extra)
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        setup_testing_defaults(environ)
        captured: Dict[str, Any] = {}

        def start_response(status: str, response_headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, response_headers

        chunks = b"".join(self.app(environ, start_response))
        answer = Answer(captured["status"], captured["headers"], chunks)
        for cookie in answer.cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: Dict[str, str], *, origin: Optional[str] = ORIGIN, **headers: str) -> Answer:
        if origin is not None:
            headers.setdefault("Origin", origin)
        return self.request("POST", path, form, headers)

    def post_multi(self, path: str, pairs: List[Tuple[str, str]]) -> Answer:
        """Post a form whose fields repeat (checkboxes), from the dashboard's origin."""
        return self.request("POST", path, headers={"Origin": ORIGIN}, pairs=pairs)

    def act(self, task_id: int, action: str, note: str, **fields: str) -> Answer:
        """Post an action form as the task's page offers it."""
        page = self.get(f"/tasks/{task_id}")
        assert page.status == 200, page.text
        return self.post(f"/tasks/{task_id}/{action}", {"csrf": page.csrf(f"form-{action}"), "note": note, **fields})


def login(client: Client, operator: str = "lin", token: str = TOKEN) -> Answer:
    form_page = client.get("/login")
    assert form_page.status == 200
    return client.post("/login", {"csrf": form_page.csrf(), "operator": operator, "token": token, "next": "/"})


# ---------------------------------------------------------------- tasks in every state


def _claim_complete(db: payq.Database, queue: str, outcome: str, error: str = "", result: str = "null") -> Any:
    [task] = core.outbox_claim(db._core, queue, "test-worker", 1)
    assert task.lease_token is not None
    # No handler runs here, so the attempt took no time: a made-up duration
    # would date its start (completion time minus duration) before the
    # enqueue when both happen within that many milliseconds.
    return core.outbox_complete(db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                                outcome=outcome, result_json=result, error=error, retry_after_ms=0,
                                worker_id="test-worker", duration_ms=0)


def dead_task(db: payq.Database, kind: str = "sms.send", payload: Any = None, queue: str = "sms",
              error: str = "provider refused: number barred", **options: Any) -> int:
    """A task whose only attempt failed: dead, nothing to compensate."""
    created = db.enqueue(kind, payload if payload is not None else {"to": "+8613800000000"}, queue=queue,
                         max_attempts=1, **options)
    assert _claim_complete(db, queue, "fail", error).state == "dead"
    return created.task_id


def review_task(db: payq.Database) -> Tuple[int, int]:
    """A payout whose only attempt timed out after sending: needs_review,
    its hold still active. Returns (task id, hold id)."""
    ledger = db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    clearing = ledger.account("provider", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:42", "CNY")
    ledger.transfer(world, wallet, "100.00", key="fund-42")
    with db.transaction() as t:
        hold = t.ledger.hold(wallet, "30.00", key="wd-1/hold")
        created = t.enqueue("payout", {"to": "alipay:42", "amount": "30.00"}, queue="payouts", max_attempts=1,
                            idempotency_key="wd-1", amount=Money("30.00", "CNY"),
                            settle=Settle.capture(hold, into=clearing))
    assert _claim_complete(db, "payouts", "unknown", "timeout after send").state == "needs_review"
    return created.task_id, hold.id


@pytest.fixture
def dashboard(payq_db: payq.Database) -> Iterator[DashboardApp]:
    with make_app(payq_db, token=TOKEN) as app:
        yield app


@pytest.fixture
def operator(dashboard: DashboardApp) -> Client:
    """A client logged in as operator ``lin``."""
    client = Client(dashboard)
    assert login(client).status == 303
    return client


# ---------------------------------------------------------------- authentication


def test_every_page_needs_a_login(dashboard: DashboardApp, payq_db: payq.Database) -> None:
    task_id = dead_task(payq_db)
    client = Client(dashboard)
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/accounts", "/audit", "/throughput.json"):
        answer = client.get(path)
        assert answer.status == 303, path
        assert (answer.header("Location") or "").startswith("/login?next="), path
        assert "dead" not in answer.text
    refused = client.post(f"/tasks/{task_id}/retry", {"note": "let me in"})
    assert refused.status == 401
    assert payq_db.tasks.get(task_id).state == "dead"
    # Static files are not secret: the login page needs them.
    assert client.get("/static/dashboard.css").status == 200


def test_wrong_token_is_refused_and_the_right_one_opens_a_session(dashboard: DashboardApp) -> None:
    client = Client(dashboard)
    wrong = login(client, token=TOKEN + "x")
    assert wrong.status == 401 and "Wrong token" in wrong.text
    assert SESSION_COOKIE not in client.cookies
    bad_name = login(client, operator="lin <script>")
    assert bad_name.status == 400 and SESSION_COOKIE not in client.cookies
    assert client.get("/").status == 303

    ok = login(client, operator="lin")
    assert ok.status == 303 and ok.header("Location") == "/"
    [session] = [c for c in ok.cookies() if c.startswith(SESSION_COOKIE + "=")]
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    overview = client.get("/")
    assert overview.status == 200 and "dashboard:lin" in overview.text
    assert TOKEN not in overview.text


def test_login_redirects_back_only_inside_the_dashboard(dashboard: DashboardApp) -> None:
    client = Client(dashboard)
    assert client.get("/tasks?state=dead").header("Location") == "/login?next=%2Ftasks%3Fstate%3Ddead"
    page = client.get("/login?next=//evil.example/")
    answer = client.post("/login", {"csrf": page.csrf(), "operator": "lin", "token": TOKEN,
                                    "next": "//evil.example/"})
    assert answer.header("Location") == "/"
    client.cookies.clear()
    page = client.get("/login")
    answer = client.post("/login", {"csrf": page.csrf(), "operator": "lin", "token": TOKEN,
                                    "next": "/tasks?state=dead"})
    assert answer.header("Location") == "/tasks?state=dead"


def test_forged_expired_or_foreign_session_cookies_are_refused(dashboard: DashboardApp) -> None:
    client = Client(dashboard)
    login(client)
    genuine = client.cookies[SESSION_COOKIE]
    expires, rest = genuine.split(".", 1)
    client.cookies[SESSION_COOKIE] = f"{int(expires) + 3600}.{rest}"  # extended by hand
    assert client.get("/").status == 303
    login_here = TokenLogin(TOKEN)
    assert login_here.session(genuine) is not None
    assert login_here.session(genuine, now=int(expires) + 1) is None
    assert TokenLogin("another-token-0123456789").session(genuine) is None
    client.cookies[SESSION_COOKIE] = TokenLogin("another-token-0123456789").session_cookie("lin")
    assert client.get("/").status == 303


def test_logout_ends_the_session(operator: Client) -> None:
    page = operator.get("/")
    assert operator.post("/logout", {"csrf": page.csrf()}).status == 303
    assert SESSION_COOKIE not in operator.cookies
    assert operator.get("/").status == 303


def test_logout_revokes_the_session_cookie(dashboard: DashboardApp) -> None:
    client = Client(dashboard)
    assert login(client).status == 303
    cookie = client.cookies[SESSION_COOKIE]
    other_tab = Client(dashboard)  # a copy of the cookie: another tab, or a stolen one
    other_tab.cookies[SESSION_COOKIE] = cookie
    assert other_tab.get("/").status == 200
    page = client.get("/")
    assert client.post("/logout", {"csrf": page.csrf()}).status == 303
    assert other_tab.get("/").status == 303
    client.cookies[SESSION_COOKIE] = cookie  # put back by hand
    assert client.get("/").status == 303
    assert login(client).status == 303 and client.get("/").status == 200  # a new login works


def test_revoked_sessions_stay_bounded_and_stay_revoked() -> None:
    from payq.dashboard import auth

    login_here = TokenLogin(TOKEN)
    now = time.time()
    cookies = [login_here.session_cookie(f"op{i}", now=now - i) for i in range(auth.REVOKED_SESSIONS_MAX + 1)]
    for cookie in cookies:
        login_here.session_revoke(cookie, now=now)
    assert len(login_here._revoked) <= auth.REVOKED_SESSIONS_MAX
    assert all(login_here.session(cookie, now=now) is None for cookie in cookies)
    assert login_here.session(login_here.session_cookie("later", now=now + 1), now=now + 1) is not None


def test_failed_logins_are_limited_per_client_address(dashboard: DashboardApp) -> None:
    from payq.dashboard import auth

    attacker = Client(dashboard, extra={"REMOTE_ADDR": "203.0.113.7"})
    operator_elsewhere = Client(dashboard, extra={"REMOTE_ADDR": "198.51.100.9"})
    statuses = [login(attacker, token=f"guess-{i:04d}-0123456789").status for i in range(100)]
    assert statuses[:auth.LOGIN_FAILURES_MAX] == [401] * auth.LOGIN_FAILURES_MAX
    assert set(statuses[auth.LOGIN_FAILURES_MAX:]) == {429}
    refused = login(attacker)  # even the right token is not checked now
    assert refused.status == 429 and SESSION_COOKIE not in attacker.cookies
    assert int(refused.header("Retry-After") or 0) >= 1
    assert login(operator_elsewhere).status == 303  # another address is not affected


def test_login_throttle_window_and_bounded_memory() -> None:
    from payq.dashboard.auth import LoginThrottle

    clock = [1000.0]
    throttle = LoginThrottle(failures_max=3, window_s=60, addresses_max=100, clock=lambda: clock[0])
    for _ in range(3):
        assert throttle.retry_after_s("a") is None
        throttle.failed("a")
    assert throttle.retry_after_s("a") == pytest.approx(60)
    clock[0] += 61
    assert throttle.retry_after_s("a") is None  # the window is over
    for i in range(10_000):
        throttle.failed(f"addr-{i}")
    assert len(throttle._failures) == 100
    throttle.failed("b")
    throttle.succeeded("b")
    assert "b" not in throttle._failures


def test_a_short_token_is_refused(payq_db: payq.Database) -> None:
    with pytest.raises(ValueError):
        make_app(payq_db, token="short")
    with pytest.raises(ValueError):
        make_app(payq_db)


def test_signatures_bind_purpose_and_every_part() -> None:
    from payq.dashboard.auth import Signer

    signer = Signer(b"k" * 32)
    signature = signer.sign("csrf", "nonce", "dashboard:ann")
    assert signer.verify(signature, "csrf", "nonce", "dashboard:ann")
    assert not signer.verify(signature, "session", "nonce", "dashboard:ann")
    assert not signer.verify(signature, "csrf", "nonce", "dashboard:bob")
    assert not Signer(b"x" * 32).verify(signature, "csrf", "nonce", "dashboard:ann")
    # Fields cannot be shifted across their boundaries, the purpose included.
    assert signer.sign("a", "bc") != signer.sign("ab", "c")
    assert signer.sign("a|1:b") != signer.sign("a", "b")
    assert signer.sign("a", "") != signer.sign("a")


# ---------------------------------------------------------------- CSRF and reasons


def test_posts_without_a_valid_csrf_token_or_from_elsewhere_change_nothing(operator: Client,
                                                                           payq_db: payq.Database) -> None:
    task_id = dead_task(payq_db)
    token = operator.get(f"/tasks/{task_id}").csrf("form-retry")
    url = f"/tasks/{task_id}/retry"
    refusals = [
        operator.post(url, {"note": "no token"}),
        operator.post(url, {"csrf": "", "note": "empty token"}),
        operator.post(url, {"csrf": token[:-2] + "xx", "note": "forged token"}),
        operator.post(url, {"csrf": token, "note": "cross-site"}, origin="http://evil.example"),
        operator.post(url, {"csrf": token, "note": "no Origin, no Referer"}, origin=None),
        operator.post(url, {"csrf": token, "note": "cross-site referer"}, origin=None,
                      Referer="http://evil.example/page"),
    ]
    assert [r.status for r in refusals] == [403] * len(refusals)
    # Another browser (another nonce cookie) cannot use this browser's token.
    other = Client(operator.app)
    login(other)
    assert other.post(url, {"csrf": token, "note": "stolen token"}).status == 403
    assert payq_db.tasks.get(task_id).state == "dead" and payq_db.tasks.actions(task_id) == []
    # The login form is protected too.
    assert Client(operator.app).post("/login", {"operator": "x", "token": TOKEN}).status == 403

    same_site = operator.post(url, {"csrf": token, "note": "provider fixed"}, origin=None,
                              Referer=f"{ORIGIN}/tasks/{task_id}")
    assert same_site.status == 303
    assert payq_db.tasks.get(task_id).state == "pending"


def test_an_action_needs_a_reason_and_records_who_and_why(operator: Client, payq_db: payq.Database) -> None:
    task_id = dead_task(payq_db)
    blank = operator.act(task_id, "retry", "   ")
    assert blank.status == 400 and "A reason is required" in blank.text
    assert payq_db.tasks.get(task_id).state == "dead"

    done = operator.act(task_id, "retry", "provider unblocked the number")
    assert done.status == 303 and done.header("Location") == f"/tasks/{task_id}?done=retry"
    assert payq_db.tasks.get(task_id).state == "pending"
    [action] = payq_db.tasks.actions(task_id)
    assert (action.action, action.actor, action.note) == ("retry", "dashboard:lin", "provider unblocked the number")
    page = operator.get(done.header("Location") or "")
    assert "Sent again" in page.text and "provider unblocked the number" in page.text

    # Not offered (it ran before, so it may have been applied), and refused by payq when posted anyway.
    assert 'id="form-cancel"' not in page.text
    refused = operator.post(f"/tasks/{task_id}/cancel", {"csrf": page.csrf(), "note": "cancel it"})
    assert refused.status == 409 and "may have been applied" in refused.text
    assert payq_db.tasks.get(task_id).state == "pending"


def test_cancel_and_release_from_the_dashboard(operator: Client, payq_db: payq.Database) -> None:
    held = payq_db.enqueue("big.payout", {"amount": "90000.00"}, held=True).task_id
    page = operator.get(f"/tasks/{held}")
    assert 'id="form-release"' in page.text and 'id="form-cancel"' in page.text
    assert 'id="form-retry"' not in page.text
    assert operator.act(held, "release", "approved by finance").status == 303
    assert payq_db.tasks.get(held).state == "pending"
    assert operator.act(held, "cancel", "customer withdrew the request").status == 303
    assert payq_db.tasks.get(held).state == "cancelled"
    assert [(a.action, a.actor) for a in payq_db.tasks.actions(held)] == [
        ("release", "dashboard:lin"), ("cancel", "dashboard:lin")]


def test_resolve_needs_an_outcome_then_settles_the_hold(operator: Client, payq_db: payq.Database) -> None:
    task_id, hold_id = review_task(payq_db)
    page = operator.get(f"/tasks/{task_id}")
    assert 'id="form-resolve"' in page.text and 'id="form-retry"' not in page.text
    missing = operator.act(task_id, "resolve", "checked with the provider")
    assert missing.status == 400 and "choose applied or not applied" in missing.text
    assert payq_db.tasks.get(task_id).state == "needs_review"

    done = operator.act(task_id, "resolve", "provider statement shows P-77 paid", outcome="applied")
    assert done.status == 303
    assert payq_db.tasks.get(task_id).state == "succeeded"
    assert payq_db.ledger.get_hold(hold_id).status == "captured"
    [action] = payq_db.tasks.actions(task_id)
    assert (action.action, action.actor) == ("resolve_applied", "dashboard:lin")
    assert payq_db.ledger.audit().ok


def test_a_failed_settlement_is_resolved_by_capturing_into_another_account(operator: Client,
                                                                            payq_db: payq.Database) -> None:
    # The payout succeeded, but the account it is captured into was closed
    # meanwhile: the result is kept and the task waits; the page offers the
    # ways the hold can actually be settled.
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    payouts = ledger.account("payouts", "CNY", "system")
    suspense = ledger.account("suspense", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:43", "CNY")
    ledger.transfer(world, wallet, "100.00", key="fund-43")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(wallet, "25.00", key="wd-43/hold")
        created = t.enqueue("payout", {"to": "alipay:43"}, queue="payouts", idempotency_key="wd-43",
                            settle=Settle.capture(hold, into=payouts))
    ledger.close_account(payouts)
    assert _claim_complete(payq_db, "payouts", "success", result='{"paid": "P-43"}').state == "needs_review"
    page = operator.get(f"/tasks/{created.task_id}")
    assert "its settlement failed" in page.text and 'name="capture_into"' in page.text
    wrong = operator.act(created.task_id, "resolve", "paid per statement", outcome="applied", settle="capture_into",
                         capture_into="x")
    assert wrong.status == 400 and payq_db.tasks.get(created.task_id).state == "needs_review"
    done = operator.act(created.task_id, "resolve", "payouts account closed; parked in suspense", outcome="applied",
                        settle="capture_into", capture_into=str(suspense.id))
    assert done.status == 303
    assert payq_db.ledger.get_hold(hold.id).status == "captured"
    assert ledger.get_account(suspense).balance == Money("25.00", "CNY")
    assert [a.action for a in payq_db.tasks.actions(created.task_id)] == [
        "settlement_failed", "resolve_applied_captured_into"]
    assert ledger.audit().ok


def test_a_refused_action_is_shown_not_hidden(operator: Client, payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    wallet = ledger.account("user:7", "CNY")
    ledger.transfer(world, wallet, "10.00", key="fund-7")
    with payq_db.transaction() as t:
        hold = t.ledger.hold(wallet, "10.00", key="wd-7/hold")
        t.enqueue("payout", {}, queue="payouts", max_attempts=1, settle=Settle.capture(hold, into=world))
    [task] = core.outbox_claim(payq_db._core, "payouts", "w", 1)
    assert task.lease_token is not None
    core.outbox_complete(payq_db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                         outcome="fail", result_json="null", error="refused", retry_after_ms=0, worker_id="w",
                         duration_ms=1)
    refused = operator.act(task.id, "retry", "try again")  # its hold was released: payq refuses
    assert refused.status == 409 and "Refused" in refused.text and "enqueue a new task" in refused.text
    assert payq_db.tasks.get(task.id).state == "dead"


# ---------------------------------------------------------------- escaping


def test_hostile_kinds_payloads_errors_and_notes_are_escaped(operator: Client, payq_db: payq.Database) -> None:
    task_id = dead_task(payq_db, kind=HOSTILE, queue="q1",
                        payload={"name": '"><img src=x onerror=alert(1)>', "html": HOSTILE},
                        error=f"provider said {HOSTILE}", unique_key=f"key-{HOSTILE}")
    assert operator.act(task_id, "retry", f"note {HOSTILE}").status == 303
    payq_db.ledger.account(f"owner {HOSTILE}", "CNY")
    pages = [operator.get(p) for p in ("/", "/tasks", f"/tasks/{task_id}", f"/tasks?kind={HOSTILE}",
                                        f"/tasks?key=key-{HOSTILE}", "/accounts")]
    for page in pages:
        assert page.status == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "default-src 'none'; script-src 'self'" in (page.header("Content-Security-Policy") or "")
        assert page.header("X-Content-Type-Options") == "nosniff" and page.header("X-Frame-Options") == "DENY"
    detail = pages[2].text
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in detail  # the kind, the error, the note
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in detail  # the payload
    assert "note &lt;script&gt;" in detail
    assert f"/tasks/{task_id}" in pages[4].text  # found by its (hostile) unique key
    assert "owner &lt;script&gt;" in pages[5].text


# ---------------------------------------------------------------- lists, filters, search


def _ids(answer: Answer) -> List[int]:
    return [int(m) for m in re.findall(r'<a href="/tasks/(\d+)">', answer.text)]


def test_tasks_filter_by_state_queue_and_kind_and_search_by_key(operator: Client, payq_db: payq.Database) -> None:
    a_sms = payq_db.enqueue("sms.send", {}, queue="a", unique_key="order-1/sms").task_id
    a_mail = payq_db.enqueue("mail.send", {}, queue="a", idempotency_key="order-1/mail").task_id
    b_sms = payq_db.enqueue("sms.send", {}, queue="b").task_id
    dead = dead_task(payq_db, queue="c")

    [alert] = [t.id for t in payq_db.tasks.list(queue="payq.alerts")]  # raised when the task died
    # Newest first, as River and Oban list them.
    assert _ids(operator.get("/tasks")) == [alert, dead, b_sms, a_mail, a_sms]
    assert _ids(operator.get("/tasks?queue=a")) == [a_mail, a_sms]
    assert _ids(operator.get("/tasks?kind=sms.send")) == [dead, b_sms, a_sms]
    assert _ids(operator.get("/tasks?kind=sms.send&queue=a")) == [a_sms]
    assert _ids(operator.get("/tasks?state=dead")) == [dead]
    assert _ids(operator.get("/tasks?state=pending&queue=b")) == [b_sms]
    assert _ids(operator.get("/tasks?key=order-1/sms")) == [a_sms]  # the unique key
    assert _ids(operator.get("/tasks?key=order-1/mail")) == [a_mail]  # the idempotency key
    assert _ids(operator.get("/tasks?key=order-2")) == []
    assert "dead (1)" in operator.get("/tasks").text

    first = operator.get("/tasks?limit=2")
    assert _ids(first) == [alert, dead]
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert next_link, first.text
    assert _ids(operator.get(next_link.group(1).replace("&amp;", "&"))) == [b_sms, a_mail]

    assert operator.get("/tasks?state=lost").status == 400
    assert operator.get("/tasks?page=x").status == 400
    assert operator.get("/tasks/999999").status == 404
    assert operator.get("/nowhere").status == 404
    assert operator.get(f"/tasks/{dead}/retry").status == 405


def test_task_page_shows_the_attempt_timeline(operator: Client, payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("crm.push", {"id": 7}, queue="crm", max_attempts=3).task_id
    _claim_complete(payq_db, "crm", "retry", "HTTP 503 from crm")
    with payq_db.transaction() as t:  # due now: the backoff is not what this test is about
        t.execute("UPDATE @schema@.task SET run_at = now() WHERE id = $1", [task_id])
    _claim_complete(payq_db, "crm", "success", result='{"crm_id": "C-9"}')
    page = operator.get(f"/tasks/{task_id}")
    timeline = page.text[page.text.index('<ol class="timeline">'):]
    assert timeline.index("enqueued") < timeline.index("attempt #1") < timeline.index("attempt #2") \
        < timeline.index("finished")
    assert "HTTP 503 from crm" in timeline and "<strong>retry</strong>" in timeline
    assert "<strong>success</strong>" in timeline and "test-worker" in timeline
    assert "C-9" in page.text  # the result
    assert "No operator action applies" in page.text


# ---------------------------------------------------------------- ledger pages


def test_accounts_and_their_journals(operator: Client, payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    bob = ledger.account("user:bob", "CNY")
    ledger.transfer(world, alice, "100.00", key="fund")
    for i in range(55):
        ledger.transfer(alice, bob, "1.00", key=f"pay-{i}")

    listing = operator.get("/accounts")
    assert "user:alice" in listing.text and "45.00 CNY" in listing.text
    assert "user:bob" not in operator.get("/accounts?owner=user:alice").text

    page = operator.get(f"/accounts/{alice.id}")
    assert "Entries 7&ndash;56 of 56" in page.text
    rows = re.findall(r'<tr><td class="num">(\d+)</td>', page.text)
    assert rows[0] == "56" and rows[-1] == "7"  # newest first
    # The newest entry: 46.00 before, -1.00, 45.00 after.
    assert re.search(r"46\.00 CNY</td><td class=\"num\">-1\.00 CNY</td><td class=\"num\">45\.00 CNY", page.text)
    older = operator.get(f"/accounts/{alice.id}?after_seq=0")
    assert re.findall(r'<tr><td class="num">(\d+)</td>', older.text)[-1] == "1"
    assert "100.00 CNY" in older.text

    tx = ledger.find_transaction("pay-0")
    assert tx is not None
    tx_page = operator.get(f"/transactions/{tx.id}")
    assert tx_page.status == 200 and "pay-0" in tx_page.text and f"/accounts/{bob.id}" in tx_page.text
    assert operator.get("/accounts/999999").status == 404


def test_audit_status_clean_then_a_broken_ledger(operator: Client, payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "CNY", "system", allow_negative=True)
    alice = ledger.account("user:alice", "CNY")
    ledger.transfer(world, alice, "10.00", key="fund")
    clean = operator.get("/audit")
    assert clean.status == 200 and 'id="audit-status"' in clean.text and "<strong>clean</strong>" in clean.text
    assert "Ledger audit" in operator.get("/").text and "clean" in operator.get("/").text

    with payq_db.transaction() as t:  # what no payq operation can do: a balance off its journal
        t.execute("UPDATE @schema@.account SET balance = balance + 1 WHERE id = $1", [alice.id])
    with make_app(payq_db, token=TOKEN) as fresh:
        client = Client(fresh)
        login(client)
        broken = client.get("/audit")
    assert "violation(s)" in broken.text and "<strong>clean</strong>" not in broken.text
    assert f"{alice.id}" in broken.text


# ---------------------------------------------------------------- throughput


def test_throughput_counts_each_finished_task_once(payq_db: payq.Database) -> None:
    sampler = Throughput(payq_db, interval=timedelta(seconds=1), commit_grace=timedelta(0))
    sampler.sample()
    first = sampler.snapshot()
    assert len(first["depth"]) == 1 and len(first["finished"]) == 60
    assert sum(m["succeeded"] + m["dead"] for m in first["finished"]) == 0

    for i in range(3):
        payq_db.enqueue("ok", {}, queue="t")
    payq_db.enqueue("bad", {}, queue="t", max_attempts=1)
    for _ in range(3):
        _claim_complete(payq_db, "t", "success")
    _claim_complete(payq_db, "t", "fail", "no")
    payq_db.enqueue("waiting", {}, queue="t")
    sampler.sample()
    sampler.sample()  # nothing new: nothing counted twice
    snapshot = sampler.snapshot()
    assert sum(m["succeeded"] for m in snapshot["finished"]) == 3
    assert sum(m["dead"] for m in snapshot["finished"]) == 1
    # Pending: "waiting" and the alert raised when "bad" died.
    assert snapshot["depth"][-1]["pending"] == 2 and snapshot["error"] is None


def test_the_overview_embeds_the_chart_data_and_serves_it_as_json(operator: Client, payq_db: payq.Database) -> None:
    payq_db.enqueue("sms.send", {}, queue="sms")
    overview = operator.get("/")
    assert '<canvas id="throughput"' in overview.text and 'data-series="{&quot;' in overview.text
    assert "sms" in overview.text
    data = operator.get("/throughput.json")
    assert data.status == 200 and data.header("Content-Type") == "application/json"
    assert '"depth":[{' in data.text


# ---------------------------------------------------------------- static files and packaging


def test_static_files_ship_inside_the_package(operator: Client) -> None:
    static = resources.files("payq.dashboard").joinpath("static")
    assert static.joinpath("dashboard.js").is_file() and static.joinpath("dashboard.css").is_file()
    script = operator.get("/static/dashboard.js")
    assert script.status == 200 and script.header("Content-Type") == "text/javascript; charset=utf-8"
    assert script.body == static.joinpath("dashboard.js").read_bytes()
    etag = script.header("ETag") or ""
    assert operator.get("/static/dashboard.js", **{"If-None-Match": etag}).status == 304
    assert operator.get("/static/../app.py").status == 404
    assert operator.get("/static/nothing.js").status == 404


# ---------------------------------------------------------------- the host application's authentication


def test_host_authentication_under_a_prefix(payq_db: payq.Database) -> None:
    def authenticate(environ: Dict[str, Any]) -> Optional[str]:
        return "sso:kim" if environ.get("HTTP_X_USER") == "kim" else None

    task_id = dead_task(payq_db)
    with make_app(payq_db, authenticate=authenticate, secret=b"s" * 32) as app:
        stranger = Client(app, script_name="/ops/payq")
        assert stranger.get("/").status == 403 and stranger.get("/login").status == 403
        kim = Client(app, script_name="/ops/payq", extra={"HTTP_X_USER": "kim"})
        page = kim.get(f"/tasks/{task_id}")
        assert page.status == 200 and "sso:kim" in page.text
        assert 'action="/ops/payq/tasks/' in page.text and 'href="/ops/payq/static/dashboard.css"' in page.text
        assert any(c.startswith(CSRF_COOKIE + "=") and "Path=/ops/payq" in c for c in page.cookies())
        assert "Log out" not in page.text
        done = kim.act(task_id, "retry", "SMS gateway is back")
        assert done.status == 303 and done.header("Location") == f"/ops/payq/tasks/{task_id}?done=retry"
    [action] = payq_db.tasks.actions(task_id)
    assert (action.actor, action.note) == ("sso:kim", "SMS gateway is back")


def test_flask_mount_uses_the_applications_session(payq_db: payq.Database, payq_dsn: str) -> None:
    flask = pytest.importorskip("flask")
    from payq.contrib.flask import Payq, mount_dashboard

    app = flask.Flask("dashboard_test")
    app.config.update(PAYQ_DSN=payq_dsn, PAYQ_SCHEMA=payq_db.schema, SECRET_KEY="flask-secret-key-for-tests")
    Payq(app)
    mount_dashboard(app, "/ops/payq", authenticate=lambda: flask.session.get("user"))
    task_id = dead_task(payq_db)
    client = app.test_client()
    assert client.get("/ops/payq/").status_code == 403
    with client.session_transaction() as session:
        session["user"] = "alice"
    page = client.get(f"/ops/payq/tasks/{task_id}")
    assert page.status_code == 200 and "flask:alice" in page.get_data(as_text=True)
    token = Answer("200 OK", [], page.get_data()).csrf("form-retry")
    done = client.post(f"/ops/payq/tasks/{task_id}/retry", data={"csrf": token, "note": "retry from flask"},
                       headers={"Origin": "http://localhost"})
    assert done.status_code == 303, done.get_data(as_text=True)
    [action] = payq_db.tasks.actions(task_id)
    assert (action.actor, action.note) == ("flask:alice", "retry from flask")


class _StaffUser:
    is_authenticated = True
    is_active = True
    is_staff = True

    def get_username(self) -> str:
        return "alice"


def test_django_mount_records_the_staff_user(django_order_model: Any, payq_db: payq.Database) -> None:
    from django.test import RequestFactory
    from django.test.utils import override_settings
    from django.urls import include, path, resolve

    urls = types.ModuleType("payq_dashboard_test_urls")
    urls.urlpatterns = [path("ops/payq/", include("payq.contrib.django.urls"))]  # type: ignore[attr-defined]
    task_id = dead_task(payq_db)
    with override_settings(INSTALLED_APPS=["payq.contrib.django"], PAYQ={"SCHEMA": payq_db.schema},
                           ROOT_URLCONF=urls):
        def call(request: Any) -> Any:
            request.user = _StaffUser()
            match = resolve(request.path_info)
            return match.func(request, *match.args, **match.kwargs)

        page = call(RequestFactory().get(f"/ops/payq/tasks/{task_id}"))
        assert page.status_code == 200 and b"django:alice" in page.content
        assert b'action="/ops/payq/tasks/' in page.content
        nonce = page.cookies[CSRF_COOKIE]
        assert nonce["httponly"] and nonce["samesite"] == "Strict" and nonce["path"] == "/ops/payq"
        token = Answer("200 OK", [], page.content).csrf("form-retry")
        post = RequestFactory().post(f"/ops/payq/tasks/{task_id}/retry",
                                     urlencode({"csrf": token, "note": "from django"}),
                                     content_type="application/x-www-form-urlencoded",
                                     HTTP_ORIGIN="http://testserver", HTTP_COOKIE=f"{CSRF_COOKIE}={nonce.value}")
        done = call(post)
        assert done.status_code == 303, done.content
        overview = call(RequestFactory().get("/ops/payq/"))
        assert overview.status_code == 200 and b"Overview" in overview.content
    [action] = payq_db.tasks.actions(task_id)
    assert (action.actor, action.note) == ("django:alice", "from django")


# ---------------------------------------------------------------- payq dashboard


def _start_cli(payq_db: payq.Database, payq_dsn: str, token: Optional[str]) -> Tuple[subprocess.Popen, str, Path]:
    env = dict(os.environ)
    env.pop("PAYQ_DASHBOARD_TOKEN", None)
    if token is not None:
        env["PAYQ_DASHBOARD_TOKEN"] = token
    err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"payq-dashboard-{os.getpid()}-{time.monotonic_ns()}.log"
    err = open(err_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "payq", "--dsn", payq_dsn, "--schema", payq_db.schema,
                                "dashboard", "--port", "0"], stdout=subprocess.DEVNULL, stderr=err, env=env)
    err.close()
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        text = err_path.read_text()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+/)", text)
        if match:
            return process, match.group(1), err_path
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"payq dashboard did not start:\n{text}")
        time.sleep(0.05)


def _stop_cli(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=WAIT_S_MAX)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_payq_dashboard_prints_a_generated_token_once_and_stops_on_sigterm(payq_db: payq.Database,
                                                                            payq_dsn: str) -> None:
    process, url, err_path = _start_cli(payq_db, payq_dsn, None)
    try:
        with urllib.request.urlopen(url + "login", timeout=WAIT_S_MAX) as answer:
            assert isinstance(answer, HTTPResponse) and answer.status == 200
        assert _stop_cli(process) == 0
        text = err_path.read_text()
        tokens = re.findall(r"login token \(shown once[^)]*\): (\S+)", text)
        assert len(tokens) == 1 and len(tokens[0]) >= 32 and text.count(tokens[0]) == 1
        assert "stopped" in text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        err_path.unlink(missing_ok=True)


def test_payq_dashboard_takes_its_token_from_the_environment(payq_db: payq.Database, payq_dsn: str) -> None:
    token = "env-token-abcdefghijklmnop"
    process, url, err_path = _start_cli(payq_db, payq_dsn, token)
    try:
        assert _stop_cli(process) == 0
        assert token not in err_path.read_text() and "login token" not in err_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        err_path.unlink(missing_ok=True)
    short = subprocess.run([sys.executable, "-m", "payq", "--dsn", payq_dsn, "--schema", payq_db.schema,
                            "dashboard", "--port", "0"], env={**os.environ, "PAYQ_DASHBOARD_TOKEN": "short"},
                           capture_output=True, text=True, timeout=WAIT_S_MAX)
    assert short.returncode == 2 and "too short" in short.stderr


# ---------------------------------------------------------------- task lists, bulk actions, queues, workers


def test_task_list_sorts_shows_next_run_and_finished_and_jumps(operator: Client, payq_db: payq.Database) -> None:
    later = payq_db.enqueue("sms.send", {}, queue="s", delay=timedelta(hours=2)).task_id
    sooner = payq_db.enqueue("sms.send", {}, queue="s", delay=timedelta(hours=1)).task_id
    dead = dead_task(payq_db, queue="s")
    [alert] = [t.id for t in payq_db.tasks.list(queue="payq.alerts")]
    page = operator.get("/tasks?queue=s")
    assert "<th>next run</th>" in page.text and "<th>finished</th>" in page.text
    assert _ids(page) == [dead, sooner, later]
    assert _ids(operator.get("/tasks?queue=s&sort=oldest")) == [later, sooner, dead]
    assert _ids(operator.get("/tasks?queue=s&sort=next_run&state=pending")) == [sooner, later]
    assert _ids(operator.get("/tasks?sort=finished")) == [dead]  # finished tasks only
    assert alert in _ids(operator.get("/tasks?sort=next_run"))  # pending and held tasks only
    assert dead not in _ids(operator.get("/tasks?sort=next_run"))
    # What the live refresh fetches: the list alone, without the page around it.
    fragment = operator.get("/tasks?queue=s&fragment=list")
    assert fragment.text.startswith('<div id="task-list"') and _ids(fragment) == [dead, sooner, later]
    assert 'class="tabs"' not in fragment.text
    assert operator.get("/tasks?sort=random()").status == 400  # orders come from a fixed table
    # A page by number, and the form that jumps to one.
    assert _ids(operator.get("/tasks?queue=s&limit=1&page=2")) == [sooner]
    assert _ids(operator.get("/tasks?queue=s&limit=1&page=4")) == []
    assert 'name="page"' in page.text
    assert operator.get("/tasks?page=0").status == 400
    # A task by id.
    jumped = operator.get(f"/tasks?jump={sooner}")
    assert jumped.status == 303 and jumped.header("Location") == f"/tasks/{sooner}"
    assert operator.get("/tasks?jump=999999").status == 404
    assert operator.get("/tasks?jump=1;drop").status == 400


def test_payload_search_matches_fields_paths_and_json_with_bound_parameters(operator: Client,
                                                                             payq_db: payq.Database) -> None:
    number = payq_db.enqueue("payout", {"order_id": 123, "customer": {"id": 7}}, queue="p").task_id
    text = payq_db.enqueue("payout", {"order_id": "123"}, queue="p").task_id
    other = payq_db.enqueue("payout", {"order_id": 124, "note": "x'); DROP TABLE task; --"}, queue="p").task_id

    def found(search: str, **more: str) -> List[int]:
        answer = operator.get("/tasks?" + urlencode({"payload": search, **more}))
        assert answer.status == 200, answer.text
        return _ids(answer)

    assert found("payload.order_id=123") == [text, number]  # the number and the same text
    assert found("order_id=123", queue="p", state="pending") == [text, number]
    assert found('order_id="123"') == [text]
    assert found('{"order_id": 123}') == [number]
    assert found("customer.id=7") == [number]
    assert found("order_id=125") == []
    assert found("note=x'); DROP TABLE task; --") == [other]  # data, never SQL
    assert payq_db.tasks.get(other).state == "pending"
    assert found("order_id=NaN") == []  # not JSON: searched as text, not a database error
    for bad in ("=5", "order_id", "a..b=1", "[1, 2]", "x" * 501, '{"order_id": NaN}', "order_id=\x00",
                '{"order_id": "\\u0000"}'):
        assert operator.get("/tasks?" + urlencode({"payload": bad})).status == 400, bad
    assert 'value="customer.id=7"' in operator.get("/tasks?" + urlencode({"payload": "customer.id=7"})).text


def test_bulk_retry_and_cancel_act_on_each_selected_task_with_one_reason(operator: Client,
                                                                         payq_db: payq.Database) -> None:
    dead_a = dead_task(payq_db, queue="sms")
    dead_b = dead_task(payq_db, queue="sms")
    pending = payq_db.enqueue("sms.send", {}, queue="sms").task_id
    page = operator.get("/tasks")
    assert 'id="bulk"' in page.text and f'name="task" value="{dead_a}"' in page.text

    answer = operator.post_multi("/tasks/bulk", [("csrf", page.csrf("bulk")), ("do", "retry"),
                                                 ("note", "carrier fixed the route"), ("task", str(dead_a)),
                                                 ("task", str(dead_b)), ("task", str(pending))])
    assert answer.status == 200
    assert "2 of 3 task(s) retried" in answer.text and "refused" in answer.text
    assert f"task {pending} is pending" in answer.text  # why the third was refused
    for task_id in (dead_a, dead_b):
        assert payq_db.tasks.get(task_id).state == "pending"
        [action] = payq_db.tasks.actions(task_id)
        assert (action.action, action.actor, action.note) == ("retry", "dashboard:lin", "carrier fixed the route")
    assert payq_db.tasks.actions(pending) == []

    cancelled = operator.post_multi("/tasks/bulk", [("csrf", page.csrf("bulk")), ("do", "cancel"),
                                                    ("note", "customer withdrew"), ("task", str(pending))])
    assert cancelled.status == 200 and "1 of 1 task(s) cancelled" in cancelled.text
    assert payq_db.tasks.get(pending).state == "cancelled"

    # Refused before anything is written: no reason, nothing selected, too many, an unknown action.
    fresh = dead_task(payq_db, queue="sms-2")
    for form, status in (([("do", "retry"), ("note", ""), ("task", str(fresh))], 400),
                         ([("do", "retry"), ("note", "why")], 400),
                         ([("do", "retry"), ("note", "why"), *(("task", str(i)) for i in range(1, 202))], 400),
                         ([("do", "delete"), ("note", "why"), ("task", str(fresh))], 400),
                         ([("do", "retry"), ("note", "why"), ("task", "1 OR 1=1")], 400)):
        refused = operator.post_multi("/tasks/bulk", [("csrf", page.csrf("bulk")), *form])
        assert refused.status == status, form
    assert payq_db.tasks.get(fresh).state == "dead" and payq_db.tasks.actions(fresh) == []
    # Without a valid CSRF token nothing happens either.
    assert operator.post_multi("/tasks/bulk", [("csrf", "forged"), ("do", "retry"), ("note", "x"),
                                               ("task", str(fresh))]).status == 403
    assert payq_db.tasks.get(fresh).state == "dead"


def test_queue_pause_resume_and_limits_are_recorded_with_who_and_why(operator: Client,
                                                                     payq_db: payq.Database) -> None:
    payq_db.enqueue("payout", {}, queue="payouts")

    def act(action: str, **form: str) -> Answer:
        page = operator.get("/queues/payouts")
        assert page.status == 200, page.text
        return operator.post(f"/queues/payouts/{action}", {"csrf": page.csrf(f"form-{action}"), **form})

    assert act("pause", note="").status == 400  # a reason is required
    assert not payq_db.queues.get("payouts").paused
    paused = act("pause", note="provider outage INC-42")
    assert paused.status == 303 and paused.header("Location") == "/queues/payouts?done=pause"
    assert payq_db.queues.get("payouts").paused
    page = operator.get("/queues/payouts?done=pause")
    assert 'id="queue-state">paused' in page.text and 'id="form-resume"' in page.text

    limits = {"note": "provider asks for 4 at once", "concurrency": "4", "rate_count": "10", "rate_window_s": "1",
              "amount": "50000.00", "amount_currency": "CNY", "amount_window_s": "3600", "weight": "3"}
    assert act("limits", **limits).status == 303
    queue = payq_db.queues.get("payouts")
    assert queue.concurrency == 4 and queue.rate == (10, timedelta(seconds=1)) and queue.weight == 3
    assert queue.amount == (Money("50000.00", "CNY"), timedelta(hours=1))
    assert act("limits", **{**limits, "concurrency": "-1"}).status == 400
    assert act("limits", **{**limits, "rate_window_s": ""}).status == 400  # a rate needs its window
    assert act("limits", **{**limits, "amount": "1.001"}).status == 400  # more digits than CNY has
    assert payq_db.queues.get("payouts").concurrency == 4
    assert act("resume", note="provider is back").status == 303
    assert not payq_db.queues.get("payouts").paused

    log = payq_db.queues.actions("payouts")
    assert [(a.action, a.actor, a.note) for a in log] == [
        ("resume", "dashboard:lin", "provider is back"),
        ("configure", "dashboard:lin", "provider asks for 4 at once"),
        ("pause", "dashboard:lin", "provider outage INC-42")]
    assert log[1].detail["concurrency_max"] == 4
    shown = operator.get("/queues/payouts").text
    assert shown.index("provider is back") < shown.index("provider outage INC-42")  # newest first
    assert "provider outage INC-42" in operator.get("/queues").text

    # An unknown queue: no page, no action, and the library refuses it too.
    assert operator.get("/queues/payuots").status == 404
    assert operator.post("/queues/payuots/pause", {"csrf": operator.get("/queues/payouts").csrf("form-pause"),
                                                   "note": "typo"}).status == 404
    with pytest.raises(payq.UnknownQueue):
        payq_db.queues.pause("payuots", actor="ops", note="typo")
    assert issubclass(payq.UnknownQueue, payq.InvalidArgument)
    assert "payuots" not in [q.name for q in payq_db.queues.list()]


def test_workers_page_shows_what_each_worker_runs_now(operator: Client, payq_db: payq.Database) -> None:
    assert 'id="no-workers"' in operator.get("/workers").text
    first = payq_db.enqueue("sms.send", {}, queue="w").task_id
    second = payq_db.enqueue("crm.push", {}, queue="w").task_id
    third = payq_db.enqueue("sms.send", {}, queue="w2").task_id
    core.outbox_claim(payq_db._core, "w", "host-a:11:aaaaaa", 2)
    core.outbox_claim(payq_db._core, "w2", "host-b:22:bbbbbb", 1)
    dead_task(payq_db, queue="w3")  # finished by "test-worker": seen lately, idle now
    page = operator.get("/workers")
    assert page.status == 200
    sections = {m.group(1): m.group(2) for m in re.finditer(
        r'<section class="worker" data-worker="([^"]+)">(.*?)</section>', page.text, re.S)}
    assert set(sections) == {"host-a:11:aaaaaa", "host-b:22:bbbbbb", "test-worker"}
    def listed(section: str) -> List[int]:
        return [int(m) for m in re.findall(r'<a href="/tasks/(\d+)">', sections[section])]

    assert listed("host-a:11:aaaaaa") == [first, second]
    assert listed("host-b:22:bbbbbb") == [third]
    assert "running 2" in sections["host-a:11:aaaaaa"]
    assert "idle: no task running" in sections["test-worker"] and "1 attempt(s)" in sections["test-worker"]
    assert 'href="/workers"' in page.text  # in the navigation


def test_a_handler_traceback_is_stored_bounded_shown_and_logged(operator: Client, payq_db: payq.Database,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from payq.worker import Registry, Worker

    registry = Registry()

    def deep(level: int) -> None:
        if level == 0:
            raise ValueError("provider answered <b>garbage</b>")
        deep(level - 1)

    @registry.handler("crash")
    def crash(task: Any) -> None:
        deep(100)  # more frames than are kept

    task_id = payq_db.enqueue("crash", {}, max_attempts=1).task_id
    worker = Worker(payq_db, registry=registry, concurrency=1, poll_interval=timedelta(milliseconds=50))
    with caplog.at_level("WARNING", logger="payq.worker"):
        worker.start()
        try:
            deadline = time.monotonic() + WAIT_S_MAX
            while payq_db.tasks.get(task_id).state != "dead" and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            worker.stop()
    [attempt] = payq_db.tasks.attempts(task_id)
    assert attempt.error == "ValueError: provider answered <b>garbage</b>"
    trace = attempt.traceback
    assert trace is not None and trace.startswith("Traceback (most recent call last):")
    assert trace.rstrip().endswith("ValueError: provider answered <b>garbage</b>")
    assert trace.count('File "') <= 30 and "in deep" in trace and len(trace.encode()) <= 8 * 1024
    assert any(r.exc_info and "attempt 1" in r.getMessage() and str(task_id) in r.getMessage()
               for r in caplog.records)
    page = operator.get(f"/tasks/{task_id}")
    assert '<details class="traceback">' in page.text and "in deep" in page.text
    assert "&lt;b&gt;garbage&lt;/b&gt;" in page.text and "<b>garbage</b>" not in page.text


def test_task_page_links_its_hold_and_ledger_and_journals_name_owners(operator: Client,
                                                                       payq_db: payq.Database) -> None:
    review_id, hold_id = review_task(payq_db)
    payq_db.tasks.resolve(review_id, applied=True, actor="ops", note="paid per statement")
    hold = payq_db.ledger.get_hold(hold_id)
    wallet = payq_db.ledger.get_account("user:42", "CNY")
    clearing = payq_db.ledger.get_account("provider", "CNY", namespace="system")
    capture = payq_db.ledger.find_transaction(f"task:{review_id}:capture")
    assert capture is not None
    page = operator.get(f"/tasks/{review_id}").text
    assert f'<span id="task-hold">hold {hold.id}: 30.00 CNY on <a href="/accounts/{wallet.id}"' in page
    assert f'>user:42</a>' in page and f'href="/accounts/{clearing.id}"' in page
    assert f'<a href="/transactions/{capture.id}" class="ledger-tx">transaction {capture.id}</a>' in page

    tx_page = operator.get(f"/transactions/{capture.id}").text
    assert f'title="account {wallet.id}">user:42</a>' in tx_page
    assert f'title="account {clearing.id}">provider</a>' in tx_page
    journal = operator.get(f"/accounts/{wallet.id}").text
    assert "<th>with</th>" in journal and "<td>world</td>" in journal and "<td>provider</td>" in journal


def test_owner_filter_matches_prefixes(operator: Client, payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    for owner in ("user:1", "user:2", "merchant:1", "user_x", "userZ"):
        ledger.account(owner, "CNY")
    listing = operator.get("/accounts?owner=user:").text
    assert "user:1" in listing and "user:2" in listing and "merchant:1" not in listing
    assert "user_x" not in listing  # "_" is a character here, not a LIKE wildcard
    assert "userZ" not in operator.get("/accounts?owner=user_").text
    assert "user_x" in operator.get("/accounts?owner=user_").text
    assert operator.get("/accounts?owner=" + "x" * 201).status == 400


def test_the_chart_caption_says_how_depth_is_sampled(payq_db: payq.Database) -> None:
    """Mounted in a host application (Django, Flask) nothing samples in the
    background: the caption must not claim it does."""
    for background, expected in ((False, "depth is sampled when this page asks"),
                                 (True, "depth is sampled by this dashboard every 10 s while it runs")):
        with make_app(payq_db, token=TOKEN, sample_in_background=background) as app:
            client = Client(app)
            assert login(client).status == 303
            caption = re.search(r'<p class="hint" id="chart-caption">(.*?)</p>', client.get("/").text)
            assert caption and expected in caption.group(1), caption


# ---------------------------------------------------------------- a real browser


# Skipped only outside CI: tools/run installs chromium, so in CI a missing
# browser is a failure, not a silent skip.
@pytest.mark.skipif(chromium_binary() is None and not os.environ.get("CI"),
                    reason="chromium is not installed (tools/run installs it)")
def test_an_operator_in_chromium_retries_a_dead_task_and_resolves_a_review(payq_db: payq.Database) -> None:
    dead_id = dead_task(payq_db, kind="sms.send", queue="sms")
    review_id, hold_id = review_task(payq_db)
    with make_app(payq_db, token=TOKEN) as app, DashboardServer(app) as server, Chromium() as browser:
        page = browser.page
        base = server.url.rstrip("/")
        try:
            page.navigate(base + "/")
            page.wait_for("location.pathname === '/login' && !!document.querySelector('#login')", "the login page")
            page.evaluate(f"""(() => {{
                const form = document.querySelector('#login');
                form.querySelector('[name=operator]').value = 'lin';
                form.querySelector('[name=token]').value = {TOKEN!r};
                form.querySelector('button[type=submit]').click();
                return true; }})()""")
            page.wait_for("location.pathname === '/' && document.body.innerText.includes('dashboard:lin')",
                          "the overview after login")
            page.wait_for("document.querySelector('#throughput') && "
                          "document.querySelector('#throughput').getAttribute('data-drawn')", "the chart drawn")

            page.navigate(base + "/tasks?state=dead")
            page.wait_for(f"!!document.querySelector('a[href=\"/tasks/{dead_id}\"]')", "the dead task in the list")
            page.evaluate(f"document.querySelector('a[href=\"/tasks/{dead_id}\"]').click()")
            page.wait_for(f"location.pathname === '/tasks/{dead_id}' && !!document.querySelector('#form-retry')",
                          "the dead task's page")
            # The browser's own validation keeps a form without a reason from leaving.
            page.evaluate("document.querySelector('#form-retry button[type=submit]').click()")
            assert page.evaluate("!document.querySelector('#form-retry textarea').validity.valid")
            page.evaluate("""(() => {
                const form = document.querySelector('#form-retry');
                form.querySelector('textarea[name=note]').value = 'number unblocked by the carrier';
                form.querySelector('button[type=submit]').click();
                return true; })()""")
            page.wait_for("location.search === '?done=retry'", "the retry to be done")
            assert "Sent again" in page.evaluate("document.querySelector('.notice').innerText")
            assert "number unblocked by the carrier" in page.evaluate("document.querySelector('.timeline').innerText")

            page.navigate(base + f"/tasks/{review_id}")
            page.wait_for("!!document.querySelector('#form-resolve')", "the review task's page")
            page.evaluate("""(() => {
                const form = document.querySelector('#form-resolve');
                form.querySelector('input[name=outcome][value=applied]').click();
                form.querySelector('textarea[name=note]').value = 'provider statement: paid, ref P-77';
                form.querySelector('button[type=submit]').click();
                return true; })()""")
            page.wait_for("location.search === '?done=resolve_applied'", "the resolve to be done")
            assert page.evaluate("document.querySelector('.state').innerText") == "succeeded"
            assert page.exceptions() == []
        except CdpError as exc:
            pytest.fail(f"{exc}\n--- chromium log ---\n{browser.log_tail()}")

    assert payq_db.tasks.get(dead_id).state == "pending"
    [retry] = payq_db.tasks.actions(dead_id)
    assert (retry.action, retry.actor, retry.note) == ("retry", "dashboard:lin", "number unblocked by the carrier")
    assert payq_db.tasks.get(review_id).state == "succeeded"
    [resolve] = payq_db.tasks.actions(review_id)
    assert (resolve.action, resolve.actor, resolve.note) == (
        "resolve_applied", "dashboard:lin", "provider statement: paid, ref P-77")
    assert payq_db.ledger.get_hold(hold_id).status == "captured"
    assert payq_db.ledger.audit().ok


@pytest.mark.skipif(chromium_binary() is None and not os.environ.get("CI"),
                    reason="chromium is not installed (tools/run installs it)")
def test_an_operator_in_chromium_searches_refreshes_acts_in_bulk_and_pauses_a_queue(payq_db: payq.Database) -> None:
    dead_a = dead_task(payq_db, queue="sms", payload={"order_id": 501})
    dead_b = dead_task(payq_db, queue="sms-b", payload={"order_id": 502})
    review_id, _ = review_task(payq_db)
    wallet = payq_db.ledger.get_account("user:42", "CNY")
    with make_app(payq_db, token=TOKEN) as app, DashboardServer(app) as server, Chromium() as browser:
        page = browser.page
        base = server.url.rstrip("/")
        try:
            page.navigate(base + "/login")
            page.wait_for("!!document.querySelector('#login')", "the login page")
            page.evaluate(f"""(() => {{
                const form = document.querySelector('#login');
                form.querySelector('[name=operator]').value = 'lin';
                form.querySelector('[name=token]').value = {TOKEN!r};
                form.querySelector('button[type=submit]').click();
                return true; }})()""")
            page.wait_for("location.pathname === '/'", "the overview after login")
            # The layout uses the window's width (1600 px), not a fixed column.
            assert page.evaluate("document.querySelector('main').getBoundingClientRect().width") > 1500

            # Search by payload field with the filter form.
            page.navigate(base + "/tasks")
            page.wait_for("!!document.querySelector('#filters')", "the task list")
            page.evaluate("""(() => {
                const form = document.querySelector('#filters');
                form.querySelector('[name=payload]').value = 'order_id=501';
                form.querySelector('button[type=submit]').click();
                return true; })()""")
            page.wait_for("location.search.includes('payload=order_id')", "the search")
            found = page.evaluate("Array.from(document.querySelectorAll('#task-list td a')).map(a => a.textContent)")
            assert found == [str(dead_a)]
            # Straight to a task by its id.
            page.evaluate(f"""(() => {{
                const form = document.querySelector('#jump');
                form.querySelector('[name=jump]').value = '{dead_b}';
                form.querySelector('button[type=submit]').click();
                return true; }})()""")
            page.wait_for(f"location.pathname === '/tasks/{dead_b}'", "the task jumped to")

            # Live refresh: a task enqueued meanwhile appears without reloading.
            page.navigate(base + "/tasks?state=pending")
            page.wait_for("!!document.querySelector('#task-list[data-live]')", "the pending tasks, script ready")
            page.evaluate("window.payqMarker = 'same page'")
            new_id = payq_db.enqueue("sms.send", {}, queue="sms").task_id
            page.wait_for(f"!!document.querySelector('#task-list a[href=\"/tasks/{new_id}\"]')",
                          "the new task to appear by itself")
            assert page.evaluate("window.payqMarker") == "same page"  # refreshed in place, not reloaded
            assert int(page.evaluate("document.querySelector('#task-list').getAttribute('data-refreshed')")) >= 1

            # Bulk retry of the dead tasks ("select all") with one reason.
            page.navigate(base + "/tasks?state=dead")
            page.wait_for(f"!!document.querySelector('input[name=task][value=\"{dead_b}\"]') && "
                          "!!document.querySelector('#task-list[data-live]')", "the dead tasks, script ready")
            page.evaluate("document.querySelector('#select-all').click()")
            checked = page.evaluate(
                "Array.from(document.querySelectorAll('input[name=task]:checked')).map(b => b.value)")
            assert sorted(checked) == sorted([str(dead_a), str(dead_b)])
            page.evaluate(f"""(() => {{
                const form = document.querySelector('#bulk');
                form.querySelector('select[name=do]').value = 'retry';
                form.querySelector('input[name=note]').value = 'carrier route restored';
                form.querySelector('fieldset.bulk-actions button[type=submit]').click();
                return true; }})()""")
            page.wait_for("!!document.querySelector('#bulk-result')", "the bulk result")
            assert "2 of 2 task(s) retried" in page.evaluate("document.querySelector('.notice').innerText")

            # Pause a queue with a reason; the log shows who and why.
            page.navigate(base + "/queues/payouts")
            page.wait_for("!!document.querySelector('#form-pause')", "the queue's page")
            page.evaluate("""(() => {
                const form = document.querySelector('#form-pause');
                form.querySelector('input[name=note]').value = 'provider maintenance window';
                form.querySelector('button[type=submit]').click();
                return true; })()""")
            page.wait_for("location.search === '?done=pause'", "the pause to be done")
            assert page.evaluate("document.querySelector('#queue-state').innerText") == "paused"
            log_text = page.evaluate("document.querySelector('#queue-actions').innerText")
            assert "provider maintenance window" in log_text and "dashboard:lin" in log_text

            # Who runs what: a claimed task under its worker.
            core.outbox_claim(payq_db._core, "sms", "host-c:33:cccccc", 1)
            page.navigate(base + "/workers")
            page.wait_for("!!document.querySelector('section.worker[data-worker=\"host-c:33:cccccc\"]')",
                          "the worker's section")

            # From a task to its hold's account, named by owner.
            page.navigate(base + f"/tasks/{review_id}")
            page.wait_for("!!document.querySelector('#task-hold a')", "the task's hold")
            assert page.evaluate("document.querySelector('#task-hold a').innerText") == "user:42"
            page.evaluate("document.querySelector('#task-hold a').click()")
            page.wait_for(f"location.pathname === '/accounts/{wallet.id}'", "the hold's account")
            assert page.exceptions() == []
        except CdpError as exc:
            pytest.fail(f"{exc}\n--- chromium log ---\n{browser.log_tail()}")

    assert payq_db.tasks.get(dead_a).state == "pending" and payq_db.tasks.get(dead_b).state == "pending"
    [retry] = payq_db.tasks.actions(dead_b)
    assert (retry.action, retry.actor, retry.note) == ("retry", "dashboard:lin", "carrier route restored")
    assert payq_db.queues.get("payouts").paused
    [paused] = payq_db.queues.actions("payouts")
    assert (paused.action, paused.actor, paused.note) == ("pause", "dashboard:lin", "provider maintenance window")
