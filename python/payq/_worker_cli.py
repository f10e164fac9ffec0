"""The worker command, written once for its three front ends: ``payq
worker`` (argparse), ``manage.py payq_worker`` (Django's command parser,
an argparse parser too) and ``flask payq worker`` (click).

:data:`WORKER_OPTIONS` lists the options as neutral :class:`WorkerOption`
values; :func:`argparse_add` and :func:`click_params` render them, so a
new option appears in all three commands at once. The parsed values become
a :class:`WorkerOptions` through :func:`worker_options`, which also fills
what the command line left out from the framework's settings.
:func:`app_import` imports the handler modules (the current directory on
the import path, as ``celery -A`` does) and :func:`worker_run` runs the
worker until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import payq
from payq.errors import ConfigError

__all__ = ["WorkerOption", "WorkerOptions", "WORKER_OPTIONS", "argparse_add", "click_params", "worker_options",
           "app_import", "worker_run", "worker_main", "EXIT_USAGE", "EXIT_WORKER_FAILED"]

EXIT_REFUSED = 2
EXIT_USAGE = 64
EXIT_UNAVAILABLE = 69
# sysexits' EX_SOFTWARE: a worker thread hit a broken invariant and the
# worker stopped itself; a supervisor should restart it and alert.
EXIT_WORKER_FAILED = 70

# The bounds the core's Worker checks too (cpp/include/payq/worker.hpp,
# outbox.hpp); checked here as well so that a typo is a usage error naming
# the option, before anything connects.
CONCURRENCY_MAX = 256
BATCH_MAX = 1000
POLL_MS_MIN = 10
POLL_MS_MAX = 3_600_000
GRACE_S_MAX = 3600
QUEUE_WEIGHT_MAX = 1000
PORT_MAX = 65535

QueueSpec = Tuple[str, int]


# ---------------------------------------------------------------- parsing text


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A parser of a whole number from ``low`` to ``high``; ValueError says why not."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is not between {low} and {high}")
        return value

    parse.__name__ = f"whole number {low}..{high}"
    return parse


def queues_text_parse(text: str) -> Tuple[QueueSpec, ...]:
    """``payouts:3,sms``: queues, each with an optional weight (1 when
    left out); ValueError for an empty name, a weight that is not a whole
    number from 1 to 1000, or a queue named twice."""
    queues = []
    for item in str(text).split(","):
        name, _, weight_text = item.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"{item!r} has no usable queue name (empty, or a comma in it)")
        if weight_text and not weight_text.strip().isdigit():
            raise ValueError(f"the weight in {item!r} is not a whole number")
        weight = int(weight_text) if weight_text else 1
        if not 1 <= weight <= QUEUE_WEIGHT_MAX:
            raise ValueError(f"the weight of queue {name!r} must be 1..{QUEUE_WEIGHT_MAX}, not {weight}")
        queues.append((name, weight))
    names = [name for name, _ in queues]
    if len(set(names)) != len(names):
        raise ValueError(f"{text!r} names a queue twice")
    return tuple(queues)


def module_name(text: str) -> str:
    """A dotted module name such as ``shop.tasks``."""
    parts = str(text).split(".")
    if not all(part.isidentifier() for part in parts):
        raise ValueError(f"{text!r} is not a dotted module name")
    return str(text)


def host_name(text: str) -> str:
    """An address to listen on: not empty, no spaces."""
    text = str(text).strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an address to listen on")
    return text


# ---------------------------------------------------------------- the options


@dataclass(frozen=True)
class WorkerOption:
    """One option of the worker command, independent of the parser that
    renders it. ``parse`` turns the text given into the value (ValueError
    says what is wrong with it); ``default`` is what ``payq worker`` uses
    when it is left out; ``setting`` names the framework setting the
    Django and Flask commands use instead (``"APP"`` for ``PAYQ['APP']``
    and ``PAYQ_HANDLERS``); ``switch`` options take no value."""

    name: str
    help: str
    parse: Optional[Callable[[str], Any]] = None
    default: Any = None
    metavar: Optional[str] = None
    repeatable: bool = False
    switch: bool = False
    required: bool = False
    setting: Optional[str] = None

    @property
    def flag(self) -> str:
        """The option as typed: ``--metrics-port``."""
        return "--" + self.name

    @property
    def dest(self) -> str:
        """The key of its parsed value: ``metrics_port``."""
        return self.name.replace("-", "_")


WORKER_OPTIONS: Tuple[WorkerOption, ...] = (
    WorkerOption("app", "module that registers handlers with @payq.handler (repeatable)", module_name,
                 default=(), metavar="MODULE", repeatable=True, required=True, setting="APP"),
    WorkerOption("queues", "comma-separated queues, each optionally name:weight", queues_text_parse,
                 default=(("default", 1),), metavar="NAME[:WEIGHT],...", setting="QUEUES"),
    WorkerOption("concurrency", f"threads, one connection each (1..{CONCURRENCY_MAX})",
                 whole_number(1, CONCURRENCY_MAX), default=4, metavar="N", setting="CONCURRENCY"),
    WorkerOption("batch", f"tasks claimed at a time per thread (1..{BATCH_MAX})", whole_number(1, BATCH_MAX),
                 default=10, metavar="N"),
    WorkerOption("poll-ms", "poll interval when no NOTIFY arrives", whole_number(POLL_MS_MIN, POLL_MS_MAX),
                 default=1000, metavar="MS"),
    WorkerOption("grace-s", "shutdown grace for running handlers", whole_number(0, GRACE_S_MAX), default=30,
                 metavar="S"),
    WorkerOption("no-maintenance", "do not take part in maintenance", switch=True, default=False),
    WorkerOption("metrics-port", "serve Prometheus metrics on http://HOST:PORT/metrics (0: any free port)",
                 whole_number(0, PORT_MAX), metavar="PORT"),
    WorkerOption("metrics-host", "address for --metrics-port", host_name, default="127.0.0.1", metavar="HOST"),
)


def _help(option: WorkerOption, settings: Optional[Mapping[str, str]]) -> str:
    """The help text with where the value comes from when it is left out,
    inside the help's own closing parenthesis if it has one."""
    if settings is not None and option.setting is not None:
        shown = settings[option.setting]
    elif option.switch or option.default in (None, ()):
        return option.help
    elif option.dest == "queues":
        shown = ",".join(n if w == 1 else f"{n}:{w}" for n, w in option.default)
    else:
        shown = str(option.default)
    if option.help.endswith(")"):
        return f"{option.help[:-1]}; default: {shown})"
    return f"{option.help} (default: {shown})"


def argparse_add(parser: argparse.ArgumentParser, settings: Optional[Mapping[str, str]] = None) -> None:
    """Add the worker's options to ``parser``. With ``settings`` (a
    framework's: ``{"APP": "PAYQ['APP']", ...}``), every option is optional
    and left out means None: :func:`worker_options` then reads the setting
    or payq's default."""

    for option in WORKER_OPTIONS:
        kwargs: Dict[str, Any] = {"dest": option.dest, "help": _help(option, settings)}
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _argparse_type(option)
            kwargs["metavar"] = option.metavar
            if option.repeatable:
                kwargs["action"] = "append"
        if settings is None:
            kwargs["default"] = list(option.default) if option.repeatable else option.default
            kwargs["required"] = option.required
        else:
            kwargs["default"] = False if option.switch else None
        parser.add_argument(option.flag, **kwargs)


def _argparse_type(option: WorkerOption) -> Callable[[str], Any]:
    parse = option.parse or str

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            # argparse shows this message; a plain ValueError would become
            # "invalid convert value".
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.metavar or option.dest
    return convert


def click_params(settings: Mapping[str, str], aliases: Optional[Mapping[str, Sequence[str]]] = None) -> List[Any]:
    """The worker's options as click parameters, every one optional (left
    out: None, or False for a switch) and falling back on ``settings`` as
    in :func:`argparse_add`. ``aliases`` adds other spellings of an option
    (``{"app": ["--handlers"]}``)."""
    import click

    class _Text(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click only
        """A click type around a neutral parser."""

        def __init__(self, option: WorkerOption) -> None:
            self.option = option
            self.name = (option.metavar or option.dest).lower()

        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            if not isinstance(value, str):
                return value  # a default, or a value already converted
            try:
                return self.option.parse(value) if self.option.parse is not None else value
            except ValueError as exc:
                self.fail(str(exc), param, ctx)

    params = []
    for option in WORKER_OPTIONS:
        declarations = [option.flag, *(aliases or {}).get(option.dest, ()), option.dest]
        if option.switch:
            params.append(click.Option(declarations, is_flag=True, default=False, help=_help(option, settings)))
        else:
            params.append(click.Option(declarations, type=_Text(option), multiple=option.repeatable,
                                       default=None, metavar=option.metavar, help=_help(option, settings)))
    return params


# ---------------------------------------------------------------- parsed options


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker command runs with."""

    modules: Tuple[str, ...]
    queues: Tuple[QueueSpec, ...]
    concurrency: int
    batch: int
    poll_ms: int
    grace_s: int
    maintenance: bool
    metrics_port: Optional[int]
    metrics_host: str


def _value(option: WorkerOption, value: Any) -> Any:
    """``value`` parsed if it is still text (Django's ``call_command`` passes
    keyword options as given); a repeatable option's values as a tuple."""
    if option.repeatable:
        items = [value] if isinstance(value, str) else list(value)
        return tuple(_value(WorkerOption(option.name, option.help, option.parse), item) for item in items)
    if isinstance(value, str) and option.parse is not None:
        try:
            return option.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{option.flag}: {exc}") from None
    return value


def worker_options(values: Mapping[str, Any], settings: Optional[Mapping[str, Any]] = None) -> WorkerOptions:
    """:class:`WorkerOptions` from parsed values (by ``dest``; None, an
    empty list or a False switch mean "left out"). What is left out comes
    from ``settings`` (by the option's ``setting``: ``{"APP": (...),
    "QUEUES": (...), "CONCURRENCY": 4}``), else from payq's default.
    Raises :class:`payq.ConfigError` for text that does not parse."""
    chosen: Dict[str, Any] = {}
    for option in WORKER_OPTIONS:
        value = values.get(option.dest)
        if value is None or value == [] or value == () or value is False:
            if settings is not None and option.setting is not None and option.setting in settings:
                value = settings[option.setting]
            else:
                value = option.default
        chosen[option.dest] = _value(option, value)
    return WorkerOptions(modules=chosen["app"], queues=tuple(chosen["queues"]), concurrency=chosen["concurrency"],
                         batch=chosen["batch"], poll_ms=chosen["poll_ms"], grace_s=chosen["grace_s"],
                         maintenance=not chosen["no_maintenance"], metrics_port=chosen["metrics_port"],
                         metrics_host=chosen["metrics_host"])


# ---------------------------------------------------------------- running


def _import_path_with_cwd() -> None:
    # A worker started from the project's directory finds the project's
    # modules there, as `python -m` and `celery -A` do; the `payq` console
    # script alone would only search its own bin directory.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def app_import(modules: Sequence[str]) -> Optional[str]:
    """Import the handler modules (which register with ``@payq.handler``),
    the current directory first on the import path. Returns None, or one
    line naming a module that does not exist, for the caller to report as
    a usage error. A module that exists but whose own imports fail raises
    :class:`payq.ConfigError` naming it; other errors in a module
    propagate with their traceback, which points at the bug."""
    _import_path_with_cwd()
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module == missing or module.startswith(missing + "."):
                return (f"--app {module}: no module named {missing!r} in the current directory "
                        f"({os.getcwd()}) or on the Python path")
            raise ConfigError(f"--app {module}: cannot import it: {exc}") from None
        except ImportError as exc:
            raise ConfigError(f"--app {module}: cannot import it: {exc}") from None
    return None


def worker_run(db: Any, options: WorkerOptions, registry: Any = None) -> int:
    """Run a worker of ``registry`` (default: ``@payq.handler``'s) on
    ``db`` until SIGTERM or SIGINT, with metrics on ``options.metrics_port``
    if set. Logs ``worker_ready`` (and ``worker_failed``) as JSON lines on
    stderr. Returns the exit status: 0 after a clean stop,
    :data:`EXIT_WORKER_FAILED` when a worker thread failed. Call from the
    main thread, after :func:`app_import`."""
    from payq.worker import Worker, registry as default_registry

    registry = registry if registry is not None else default_registry
    worker = Worker(db, queues=list(options.queues), registry=registry, concurrency=options.concurrency,
                    batch=options.batch, poll_interval=timedelta(milliseconds=options.poll_ms),
                    shutdown_grace=timedelta(seconds=options.grace_s), maintenance=options.maintenance)
    metrics = None
    if options.metrics_port is not None:
        from payq.metrics import MetricsServer, registry as metrics_registry

        metrics = MetricsServer(metrics_registry(db, worker=worker), host=options.metrics_host,
                                port=options.metrics_port).start()
    print(json.dumps({"event": "worker_ready", "worker": worker.worker_id, "queues": list(options.queues),
                      "kinds": registry.kinds(), "concurrency": options.concurrency,
                      "metrics": None if metrics is None else metrics.url}), file=sys.stderr, flush=True)
    try:
        worker.run()
    except Exception as exc:  # noqa: BLE001 - the error of the worker thread that failed
        # One JSON line like the worker's own log, not a traceback, and a
        # status a supervisor can tell from a clean stop.
        print(json.dumps({"event": "worker_failed", "worker": worker.worker_id,
                          "error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr, flush=True)
        return EXIT_WORKER_FAILED
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


def error_line(exc: BaseException) -> str:
    """One line for stderr: the error's class and message, its lines (a
    server's DETAIL and HINT) joined."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"payq: {type(exc).__name__}: {'; '.join(lines)}"


def error_status(exc: payq.Error) -> int:
    """The exit status of ``payq`` for an error: 69 when the database
    cannot be reached, else 2 (refused)."""
    if isinstance(exc, payq.DatabaseError) and (exc.sqlstate or "").startswith("08"):
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


def worker_main(connect: Callable[[], Any], options: WorkerOptions, registry: Any = None) -> int:
    """:func:`worker_run` on ``connect()`` as a framework's command runs
    it: a :class:`payq.Error` (bad settings, an unreachable database) is
    printed as one line on stderr and becomes the exit status ``payq``
    would give (2 or 69). The handler modules must be imported already."""
    try:
        return worker_run(connect(), options, registry)
    except payq.Error as exc:
        print(error_line(exc), file=sys.stderr, flush=True)
        return error_status(exc)
