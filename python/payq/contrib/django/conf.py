"""``settings.PAYQ``: read once, validated, cached.

::

    PAYQ = {
        "SCHEMA": "payq",              # where payq's tables live
        "DATABASE": "default",         # the DATABASES alias payq works on
        "DSN": None,                   # payq's own connections (migrate, worker); default: from DATABASES
        "POOLER": None,                # "transaction" behind pgbouncer's transaction mode (PAYQ_POOLER)
        "LISTEN_DSN": None,            # with POOLER: a direct connection for the workers' LISTEN
        "QUEUES": ["default"],         # payq_worker: "name", "name:weight" or (name, weight)
        "APP": "myapp.tasks",          # payq_worker: module(s) registering @payq.handler
        "CONCURRENCY": 4,              # payq_worker: threads, one connection each
        "NOTIFY": True,                # wake workers when a transaction with enqueues commits
        "AUTO_MIGRATE": True,          # `manage.py migrate` also migrates payq's schema
        "DASHBOARD_PERMISSION": "payq.contrib.django.dashboard.is_staff",
    }

Every key is optional. A key payq does not know, or a value of the wrong
kind, raises :class:`django.core.exceptions.ImproperlyConfigured` when the
app is loaded, naming the key.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from payq.contrib._common import QueueSpec, modules_check, queues_parse, schema_check
from payq.errors import ConfigError

__all__ = ["PayqSettings", "payq_settings", "settings_parse", "settings_reset"]

CONCURRENCY_MAX = 256

DashboardPermission = Union[str, Callable[[Any], bool]]


@dataclass(frozen=True)
class PayqSettings:
    """``settings.PAYQ``, validated. See the module docstring for the keys."""

    schema: str = "payq"
    database: str = "default"
    dsn: Optional[str] = None
    pooler: Optional[str] = None
    listen_dsn: Optional[str] = None
    queues: Tuple[QueueSpec, ...] = (("default", 1),)
    app: Tuple[str, ...] = ()
    concurrency: int = 4
    notify: bool = True
    auto_migrate: bool = True
    dashboard_permission: DashboardPermission = "payq.contrib.django.dashboard.is_staff"


_KEYS = {
    "SCHEMA": "schema",
    "DATABASE": "database",
    "DSN": "dsn",
    "POOLER": "pooler",
    "LISTEN_DSN": "listen_dsn",
    "QUEUES": "queues",
    "APP": "app",
    "CONCURRENCY": "concurrency",
    "NOTIFY": "notify",
    "AUTO_MIGRATE": "auto_migrate",
    "DASHBOARD_PERMISSION": "dashboard_permission",
}


def _bad(key: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.PAYQ[{key!r}] {problem}")


def _database(value: Any, databases: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value not in databases:
        raise _bad("DATABASE", f"must name an entry of settings.DATABASES ({sorted(databases)}), not {value!r}")
    engine = str(databases[value].get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        raise _bad("DATABASE", f"names {value!r}, whose ENGINE {engine!r} is not PostgreSQL; payq needs PostgreSQL")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, f"must be True or False, not {value!r}")
    return value


def settings_parse(raw: Any, databases: Mapping[str, Any]) -> PayqSettings:
    """Validate a ``PAYQ`` dict against ``DATABASES``; raises
    :class:`~django.core.exceptions.ImproperlyConfigured` naming the bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.PAYQ must be a dict, not {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ImproperlyConfigured(f"settings.PAYQ has unknown key(s) {unknown}; known keys: {sorted(_KEYS)}")
    values: Dict[str, Any] = {}
    values["database"] = _database(raw.get("DATABASE", "default"), databases)
    if raw.get("DSN") is not None:
        if not isinstance(raw["DSN"], str) or not raw["DSN"].strip():
            raise _bad("DSN", f"must be a libpq connection string or None, not {raw['DSN']!r}")
        values["dsn"] = raw["DSN"]
    if raw.get("POOLER") is not None:
        if raw["POOLER"] not in ("none", "session", "transaction"):
            raise _bad("POOLER", f"must be 'transaction', 'session', 'none' or None, not {raw['POOLER']!r}")
        values["pooler"] = raw["POOLER"]
    if raw.get("LISTEN_DSN") is not None:
        if not isinstance(raw["LISTEN_DSN"], str) or not raw["LISTEN_DSN"].strip():
            raise _bad("LISTEN_DSN", f"must be a libpq connection string or None, not {raw['LISTEN_DSN']!r}")
        values["listen_dsn"] = raw["LISTEN_DSN"]
    try:
        if "SCHEMA" in raw:
            values["schema"] = schema_check(raw["SCHEMA"], "settings.PAYQ['SCHEMA']")
        if "QUEUES" in raw:
            values["queues"] = queues_parse(raw["QUEUES"], "settings.PAYQ['QUEUES']")
        if "APP" in raw:
            values["app"] = modules_check(raw["APP"], "settings.PAYQ['APP']")
    except ConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
    if "CONCURRENCY" in raw:
        concurrency = raw["CONCURRENCY"]
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= CONCURRENCY_MAX:
            raise _bad("CONCURRENCY", f"must be an int from 1 to {CONCURRENCY_MAX}, not {concurrency!r}")
        values["concurrency"] = concurrency
    for key in ("NOTIFY", "AUTO_MIGRATE"):
        if key in raw:
            values[_KEYS[key]] = _flag(key, raw[key])
    if "DASHBOARD_PERMISSION" in raw:
        permission = raw["DASHBOARD_PERMISSION"]
        if not (isinstance(permission, str) and "." in permission) and not callable(permission):
            raise _bad("DASHBOARD_PERMISSION", f"must be a callable or its dotted path, not {permission!r}")
        values["dashboard_permission"] = permission
    return PayqSettings(**values)


_cached: Optional[PayqSettings] = None
_cached_lock = threading.Lock()


def payq_settings() -> PayqSettings:
    """The validated ``settings.PAYQ``, read on first use (the app reads it
    when Django starts) and cached until a test overrides a setting."""
    global _cached
    with _cached_lock:
        if _cached is None:
            from django.conf import settings  # type: ignore[import-untyped]

            _cached = settings_parse(getattr(settings, "PAYQ", None), settings.DATABASES)
        return _cached


def settings_reset(*, setting: str = "", **_: Any) -> None:
    """Forget the cached settings (connected to Django's ``setting_changed``,
    so ``override_settings(PAYQ=...)`` takes effect)."""
    global _cached
    if setting in ("", "PAYQ", "DATABASES"):
        with _cached_lock:
            _cached = None
