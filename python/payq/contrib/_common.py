"""What the Django and Flask integrations share: checks of their settings
and handlers wrapped in a framework scope. Their worker commands take the
options of ``payq worker`` and run its loop, both from
:mod:`payq._worker_cli`."""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, ContextManager, List, Sequence, Tuple

from payq.errors import ConfigError
from payq.worker import HandlerFunction, Registry, TaskRun, registry as default_registry

__all__ = ["QueueSpec", "schema_check", "queues_parse", "modules_check", "handlers_wrap"]

QueueSpec = Tuple[str, int]
"""A queue a worker serves, with its weight."""

QUEUE_WEIGHT_MAX = 1000
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def schema_check(value: Any, what: str) -> str:
    """A schema name payq's core accepts, checked when the settings are read
    so that a typo fails at start-up rather than at the first payment."""
    if not isinstance(value, str) or not _SCHEMA.match(value) or value.startswith("pg_"):
        raise ConfigError(f"{what} must be a PostgreSQL schema name of lower-case letters, digits and '_' "
                          f"(at most 63, not starting with a digit or 'pg_'), not {value!r}")
    return value


def _queue_one(item: Any, what: str) -> QueueSpec:
    if isinstance(item, str):
        name, _, weight_text = item.partition(":")
        if weight_text and not weight_text.strip().isdigit():
            raise ConfigError(f"{what}: the weight in {item!r} is not a whole number")
        weight = int(weight_text) if weight_text else 1
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        name, weight = item
        if not isinstance(name, str) or isinstance(weight, bool) or not isinstance(weight, int):
            raise ConfigError(f"{what}: {item!r} is not (queue name, int weight)")
    else:
        raise ConfigError(f"{what}: {item!r} is neither 'name', 'name:weight' nor (name, weight)")
    name = name.strip()
    if not name or "," in name:
        raise ConfigError(f"{what}: {item!r} has no usable queue name (empty, or a comma in it)")
    if not 1 <= weight <= QUEUE_WEIGHT_MAX:
        raise ConfigError(f"{what}: the weight of queue {name!r} must be 1..{QUEUE_WEIGHT_MAX}, not {weight}")
    return name, weight


def queues_parse(value: Any, what: str) -> Tuple[QueueSpec, ...]:
    """Queues from configuration: a list of ``"name"``, ``"name:weight"`` or
    ``(name, weight)``; a plain string is read as comma-separated, like
    ``payq worker --queues``. Raises :class:`payq.ConfigError`."""
    items: Sequence[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"{what} is a list of queue names, not {type(value).__name__}")
    queues = tuple(_queue_one(item, what) for item in items)
    if not queues:
        raise ConfigError(f"{what} names no queue")
    names = [name for name, _ in queues]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} names a queue twice: {names}")
    return queues


def modules_check(value: Any, what: str) -> Tuple[str, ...]:
    """Dotted module names from configuration: one string or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(m, str) for m in items):
        raise ConfigError(f"{what} is a dotted module name or a list of them, not {value!r}")
    for module in items:
        if not _MODULE.match(module):
            raise ConfigError(f"{what}: {module!r} is not a dotted module name")
    return tuple(items)


class _Scoped:
    """A handler run inside ``scope()`` (a Django connection scope, a Flask
    app context). Marked so that wrapping twice is harmless."""

    def __init__(self, function: HandlerFunction, scope: Callable[[], ContextManager[Any]]) -> None:
        self.function = function
        self.scope = scope
        self.__doc__ = getattr(function, "__doc__", None)

    def __call__(self, task: TaskRun) -> Any:
        with self.scope():
            return self.function(task)


def handlers_wrap(modules: Sequence[str], scope: Callable[[], ContextManager[Any]],
                  registry: Registry = default_registry) -> List[str]:
    """Import ``modules`` (which register their handlers with
    ``@payq.handler``), then make every handler of ``registry`` run inside
    ``scope()``. Returns the registered kinds.

    payq's :class:`~payq.worker.Registry` has no public hook around a
    handler call yet, so this rewraps its registrations in place.
    """
    for module in modules:
        importlib.import_module(module)
    registrations: List[Any] = list(registry._handlers.values())
    for registration in registrations:
        function = getattr(registration, "function", None)
        # Only Python handlers have a function; built-in HTTP handlers run in C++.
        if function is None:
            continue
        # == rather than is: a bound method (app.app_context) is a new object each time.
        if isinstance(function, _Scoped) and function.scope == scope:
            continue
        registration.function = _Scoped(function, scope)
    return registry.kinds()
