"""Where payq's web dashboard will be mounted in a Django project: the
extension point, not the dashboard.

Mount it today, under any prefix, in the project's ``urls.py``::

    urlpatterns = [
        ...,
        path("ops/payq/", include("payq.contrib.django.urls")),
    ]

Every view under the mount is wrapped in :func:`staff_required`: a visitor
who is not logged in is sent to ``settings.LOGIN_URL``; a logged-in one for
whom ``PAYQ["DASHBOARD_PERMISSION"]`` (default :func:`is_staff`) returns
False gets 403. This payq version has no dashboard yet, so the mount answers
501 to those who pass the check.

The contract for the dashboard to come: it provides its views to
:func:`dashboard_urlpatterns`, which wraps each in :func:`staff_required`
and returns them; the project's ``include`` does not change, and Django's
authentication replaces the dashboard's own token.
"""

from __future__ import annotations

from typing import Any, Callable, List
from urllib.parse import urlencode

from django.conf import settings  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
)
from django.shortcuts import resolve_url  # type: ignore[import-untyped]
from django.urls import URLPattern, path  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from payq.contrib.django.conf import payq_settings

__all__ = ["is_staff", "staff_required", "dashboard_urlpatterns"]

View = Callable[..., HttpResponse]


def is_staff(request: HttpRequest) -> bool:
    """The default permission: an active staff user."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _permission() -> Callable[[HttpRequest], bool]:
    permission = payq_settings().dashboard_permission
    return import_string(permission) if isinstance(permission, str) else permission


def staff_required(view: View) -> View:
    """Wrap a dashboard view in the permission check described above."""

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if _permission()(request):
            return view(request, *args, **kwargs)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            login = resolve_url(settings.LOGIN_URL)
            return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
        return HttpResponseForbidden("payq dashboard: staff only")

    checked.__name__ = getattr(view, "__name__", "payq_dashboard_view")
    checked.__doc__ = view.__doc__
    return checked


def _not_available(request: HttpRequest) -> HttpResponse:
    """What the mount answers until payq ships its dashboard."""
    return HttpResponse("payq: this version has no web dashboard yet; this URL is where it will appear.\n",
                        status=501, content_type="text/plain; charset=utf-8")


def dashboard_urlpatterns() -> List[URLPattern]:
    """The dashboard's URL patterns, each behind :func:`staff_required`."""
    return [path("", staff_required(_not_available), name="dashboard")]
