"""payq's web dashboard in a Django project, behind Django's authentication.

Mount it under any prefix in the project's ``urls.py``::

    urlpatterns = [
        ...,
        path("ops/payq/", include("payq.contrib.django.urls")),
    ]

Every view under the mount is wrapped in :func:`staff_required`: a visitor
who is not logged in is sent to ``settings.LOGIN_URL`` when the project set
it, or routes Django's default ``/accounts/login/``; otherwise (a fresh
project, where that redirect would end in a 404) the answer is 403 with a
one-line hint to set ``LOGIN_URL``. A logged-in visitor for whom
``PAYQ["DASHBOARD_PERMISSION"]`` (default :func:`is_staff`) returns False
gets 403. Those who pass see :mod:`payq.dashboard` (the same pages as
``payq dashboard``, without its token login); their actions are recorded as
``django:<username>``.

The dashboard runs on :func:`payq.contrib.django.database` (payq's own
connections to ``PAYQ["DATABASE"]``). It protects its forms itself (an
Origin check and a CSRF token bound to the browser and the user, keyed by
``SECRET_KEY``), so its views are exempt from Django's CSRF middleware,
whose token its forms do not carry.
"""

from __future__ import annotations

import hashlib
import io
import threading
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
)
from django.shortcuts import resolve_url  # type: ignore[import-untyped]
from django.urls import NoReverseMatch, Resolver404, URLPattern, path, resolve  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from payq.contrib.django.conf import payq_settings
from payq.dashboard import DashboardApp, make_app

__all__ = ["is_staff", "staff_required", "dashboard_urlpatterns", "dashboard_app", "dashboard_view"]

View = Callable[..., HttpResponse]


def is_staff(request: HttpRequest) -> bool:
    """The default permission: an active staff user."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _permission() -> Callable[[HttpRequest], bool]:
    permission = payq_settings().dashboard_permission
    return import_string(permission) if isinstance(permission, str) else permission


_LOGIN_HINT = ("payq dashboard: log in first; this project routes no login page at LOGIN_URL ({!r}), "
               "so set settings.LOGIN_URL to your login view's URL or name\n")


def _login_url() -> Optional[str]:
    """Where to send a visitor who is not logged in: ``settings.LOGIN_URL``
    if the project set it, or if it is routed here (Django's default,
    ``/accounts/login/``, is routed only when the project includes a login
    view there); None when neither."""
    configured = settings.is_overridden("LOGIN_URL")
    try:
        login = str(resolve_url(settings.LOGIN_URL))
    except NoReverseMatch:  # a URL name that names no view
        return None
    if configured:
        return login
    try:
        resolve(urlsplit(login).path)
    except Resolver404:
        return None
    return login


def staff_required(view: View) -> View:
    """Wrap a dashboard view in the permission check described above."""

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if _permission()(request):
            return view(request, *args, **kwargs)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            login = _login_url()
            if login is None:
                return HttpResponseForbidden(_LOGIN_HINT.format(settings.LOGIN_URL), content_type="text/plain")
            return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
        return HttpResponseForbidden("payq dashboard: staff only")

    checked.__name__ = getattr(view, "__name__", "payq_dashboard_view")
    checked.__doc__ = view.__doc__
    return checked


_REQUEST_KEY = "payq.django.request"
# The app with the payq.Database it was built on, which databases_close()
# may close: a new Database then means a new app.
_apps: Dict[Tuple[str, str], Tuple[Any, DashboardApp]] = {}
_apps_lock = threading.Lock()


def _actor(environ: Dict[str, Any]) -> Optional[str]:
    """The Django user behind a request that passed :func:`staff_required`."""
    request = environ.get(_REQUEST_KEY)
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return "django:anonymous"  # only when DASHBOARD_PERMISSION lets anonymous visitors in
    get_username = getattr(user, "get_username", None)
    name = get_username() if callable(get_username) else getattr(user, "username", "") or str(user)
    return f"django:{name}"


def _secret() -> Optional[bytes]:
    # Derived from SECRET_KEY so that every process of the project accepts
    # the same CSRF tokens; never the key itself.
    try:
        key = settings.SECRET_KEY
    except ImproperlyConfigured:
        return None
    return hashlib.sha256(b"payq.contrib.django.dashboard|" + str(key).encode()).digest() if key else None


def dashboard_app() -> DashboardApp:
    """The dashboard on :func:`payq.contrib.django.database`, one per
    database and schema, kept for the process."""
    from payq.contrib.django.db import database

    db = database()
    key = (db.dsn, db.schema)
    with _apps_lock:
        found = _apps.get(key)
        if found is None or found[0] is not db:
            found = _apps[key] = (db, make_app(db, authenticate=_actor, secret=_secret()))
        return found[1]


def _response(status_line: str, headers: List[Tuple[str, str]], body: bytes) -> HttpResponse:
    response = HttpResponse(body, status=int(status_line.split(" ", 1)[0]))
    for name, value in headers:
        if name.lower() == "set-cookie":
            cookie: SimpleCookie = SimpleCookie()
            try:
                cookie.load(value)
            except CookieError:
                continue
            response.cookies.update(cookie)
        else:
            response[name] = value
    return response


def dashboard_view(request: HttpRequest, subpath: str = "") -> HttpResponse:
    """Hand the request to the dashboard's WSGI application, mounted where
    Django routed it (``SCRIPT_NAME`` is the prefix up to the include)."""
    body = request.body if request.method == "POST" else b""
    prefix = request.path[: len(request.path) - len(subpath)] if subpath else request.path
    environ: Dict[str, Any] = dict(request.META)
    environ.update({
        # WSGI carries paths as latin-1 decoded bytes (PEP 3333); Django's are text.
        "SCRIPT_NAME": prefix.rstrip("/").encode("utf-8").decode("latin-1"),
        "PATH_INFO": ("/" + subpath).encode("utf-8").decode("latin-1"),
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": request.scheme,
        _REQUEST_KEY: request,
    })
    captured: Dict[str, Any] = {}

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, headers

    chunks = dashboard_app()(environ, start_response)
    return _response(captured["status"], captured["headers"], b"".join(chunks))


def dashboard_urlpatterns() -> List[URLPattern]:
    """The dashboard's URL patterns, each behind :func:`staff_required`."""
    # The exemption goes outside: Django's middleware reads it from the view it calls.
    view = csrf_exempt(staff_required(dashboard_view))
    return [path("", view, name="dashboard"), path("<path:subpath>", view, name="dashboard-page")]
