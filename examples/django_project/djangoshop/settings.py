"""Settings of the djangoshop example: one PostgreSQL database shared by
Django's tables and payq's (in the schema ``payq``).

The database comes from ``DATABASE_URL`` (``postgresql://user:pw@host/db``)
or ``PAYQ_DSN`` (a libpq string, ``host=... dbname=...``); with neither,
from payq's embedded server, started on first use (``payq up``).
"""

import os

from psycopg.conninfo import conninfo_to_dict

import payq


def _database_dsn() -> str:
    configured = os.environ.get("DATABASE_URL") or os.environ.get("PAYQ_DSN")
    if configured:
        return configured
    # payq's own default: a private PostgreSQL server on a unix socket.
    return payq.EmbeddedServer().up()


_params = conninfo_to_dict(_database_dsn())

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "djangoshop-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "payq.contrib.django",
    "orders",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "djangoshop.urls"
# The payq dashboard (/ops/payq/) sends visitors who are not logged in to
# LOGIN_URL. This shop has no login page, so it leaves LOGIN_URL unset and
# the dashboard answers them 403 with a hint; a real project points it at its
# login view, e.g. LOGIN_URL = "/accounts/login/" with
# path("accounts/", include("django.contrib.auth.urls")) in urls.py.
WSGI_APPLICATION = "djangoshop.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.pop("dbname", ""),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,  # anything else the DSN says (sslmode, ...)
    }
}

PAYQ = {
    "SCHEMA": os.environ.get("PAYQ_SCHEMA", "payq"),
    "DATABASE": "default",
    "QUEUES": ["payouts"],
    "APP": "orders.tasks",
    "CONCURRENCY": 2,
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
