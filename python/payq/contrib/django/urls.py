"""Mount with ``path("ops/payq/", include("payq.contrib.django.urls"))``;
see :mod:`payq.contrib.django.dashboard`."""

from __future__ import annotations

from payq.contrib.django.dashboard import dashboard_urlpatterns

app_name = "payq"
urlpatterns = dashboard_urlpatterns()
