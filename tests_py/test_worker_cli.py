"""The worker command's three front ends (python/payq/_worker_cli.py):
``payq worker``, ``manage.py payq_worker`` and ``flask payq worker`` take
the same options from one definition and parse them alike; ``payq worker
--app`` finds the project's modules in the current directory, and a
module that does not exist is a one-line usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest

import payq
from payq import _worker_cli
from payq.cli import _parser
from payq.testing import wait_until

from appconn_support import django_order_model  # noqa: F401 (fixture)

WAIT_S_MAX = 60.0

# Every option of the worker, with a value unlike its default.
FULL_ARGV = ["--app", "json", "--app", "shop.tasks", "--queues", "payouts:3,sms", "--concurrency", "7",
             "--batch", "25", "--poll-ms", "150", "--grace-s", "12", "--no-maintenance", "--metrics-port", "0",
             "--metrics-host", "127.0.0.2"]
EXPECTED = _worker_cli.WorkerOptions(modules=("json", "shop.tasks"), queues=(("payouts", 3), ("sms", 1)),
                                     concurrency=7, batch=25, poll_ms=150, grace_s=12, maintenance=False,
                                     metrics_port=0, metrics_host="127.0.0.2")


def _payq_worker_parser() -> argparse.ArgumentParser:
    parser = _parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices["worker"]


def _argparse_flags(parser: argparse.ArgumentParser) -> Set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")}


def _django_parser() -> argparse.ArgumentParser:
    pytest.importorskip("django")
    from payq.contrib.django.management.commands.payq_worker import Command

    return Command().create_parser("manage.py", "payq_worker")


def _django_own_flags() -> Set[str]:
    from django.core.management.base import BaseCommand

    return _argparse_flags(BaseCommand().create_parser("manage.py", "any"))


def _flask_command() -> Any:
    pytest.importorskip("flask")
    from payq.contrib.flask import payq_cli

    return payq_cli.commands["worker"]


def test_the_three_commands_have_the_same_options() -> None:
    spec = {option.flag for option in _worker_cli.WORKER_OPTIONS}
    assert "--metrics-port" in spec and "--metrics-host" in spec
    payq_flags = _argparse_flags(_payq_worker_parser())
    assert spec <= payq_flags
    django_flags = _argparse_flags(_django_parser()) - _django_own_flags()
    assert django_flags == spec
    flask_flags = {flag for param in _flask_command().params for flag in param.opts if flag.startswith("--")}
    assert flask_flags == spec | {"--handlers"}  # the older spelling of --app, kept


def test_the_three_commands_parse_the_same_argv_alike() -> None:
    payq_values = vars(_payq_worker_parser().parse_args(FULL_ARGV))
    assert _worker_cli.worker_options(payq_values) == EXPECTED
    django_values = vars(_django_parser().parse_args(FULL_ARGV))
    assert _worker_cli.worker_options(django_values, settings={}) == EXPECTED
    flask_values = _flask_command().make_context("worker", list(FULL_ARGV)).params
    assert _worker_cli.worker_options(flask_values, settings={}) == EXPECTED


def test_left_out_options_come_from_the_settings_then_the_defaults() -> None:
    settings = {"APP": ("shop.tasks",), "QUEUES": (("payouts", 2),), "CONCURRENCY": 9}
    django = _worker_cli.worker_options(vars(_django_parser().parse_args([])), settings=settings)
    flask = _worker_cli.worker_options(_flask_command().make_context("worker", []).params, settings=settings)
    assert django == flask == _worker_cli.WorkerOptions(
        modules=("shop.tasks",), queues=(("payouts", 2),), concurrency=9, batch=10, poll_ms=1000, grace_s=30,
        maintenance=True, metrics_port=None, metrics_host="127.0.0.1")
    # What is given wins over the settings.
    given = _worker_cli.worker_options(vars(_django_parser().parse_args(["--concurrency", "2"])), settings=settings)
    assert given.concurrency == 2


@pytest.mark.parametrize("argv, message", [
    (["--queues", "payouts:fast"], "the weight in 'payouts:fast' is not a whole number"),
    (["--queues", "a,,b"], "has no usable queue name"),
    (["--queues", "a,a"], "names a queue twice"),
    (["--concurrency", "0"], "0 is not between 1 and 256"),
    (["--metrics-port", "70000"], "70000 is not between 0 and 65535"),
    (["--poll-ms", "soon"], "'soon' is not a whole number"),
    (["--app", "shop tasks"], "'shop tasks' is not a dotted module name"),
])
def test_bad_values_are_refused_alike_by_the_three_commands(argv: List[str], message: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        _payq_worker_parser().parse_args(["--app", "x", *argv])
    assert exited.value.code == 64 and message in capsys.readouterr().err
    from django.core.management import CommandError

    parser = _django_parser()
    parser.called_from_command_line = False  # as call_command does: CommandError, not an exit
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        parser.parse_args(argv)
    import click

    with pytest.raises(click.BadParameter, match=message.replace("(", r"\(")):
        _flask_command().make_context("worker", list(argv))


# ---------------------------------------------------------------- --app and the current directory


PROJECT_TASKS = '''
"""A project's handlers, imported by `payq worker --app tasks`."""
import payq


@payq.handler("project.hello")
def hello(task):
    return {"greeted": task.payload["name"]}
'''


def _payq_script() -> str:
    # The console script, not `python -m payq`: only `-m` puts the current
    # directory on the path by itself.
    script = Path(sys.executable).parent / "payq"
    if not script.exists():
        pytest.skip(f"no payq console script beside {sys.executable}")
    return str(script)


def _events(path: Path, event: str) -> List[Dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def test_payq_worker_imports_the_app_from_the_current_directory(payq_db: payq.Database, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(PROJECT_TASKS)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSAFEPATH"}
    stderr_path = tmp_path / "worker.stderr"
    with open(stderr_path, "wb") as stderr:
        worker = subprocess.Popen([_payq_script(), "--dsn", payq_db.dsn, "--schema", payq_db.schema, "worker",
                                   "--app", "tasks", "--poll-ms", "100", "--grace-s", "10"],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
    logs = stderr_path.read_text
    try:
        wait_until(lambda: _events(stderr_path, "worker_ready") or worker.poll() is not None, WAIT_S_MAX,
                   what="the worker to start", diagnostics=logs)
        assert worker.poll() is None, logs()
        assert _events(stderr_path, "worker_ready")[0]["kinds"] == ["project.hello"]
        queued = payq_db.enqueue("project.hello", {"name": "ada"})
        wait_until(lambda: payq_db.tasks.get(queued.task_id).state == "succeeded" or worker.poll() is not None,
                   WAIT_S_MAX, what="the task to succeed", diagnostics=logs)
        assert payq_db.tasks.get(queued.task_id).result == {"greeted": "ada"}, logs()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("module", ["nosuch", "nosuch.tasks"])
def test_payq_worker_with_a_missing_app_is_one_usage_line(payq_db: payq.Database, tmp_path: Path,
                                                          module: str) -> None:
    result = subprocess.run([_payq_script(), "--dsn", payq_db.dsn, "--schema", payq_db.schema, "worker",
                             "--app", module], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"payq: error: --app {module}: no module named 'nosuch'") and str(tmp_path) in line


def test_a_module_whose_own_import_fails_is_refused_naming_it(payq_db: payq.Database, tmp_path: Path) -> None:
    # The module exists: the missing one is its dependency, which is not a
    # usage error but a broken installation (exit 2, as before).
    (tmp_path / "tasks.py").write_text("import nosuch_dependency\n")
    result = subprocess.run([_payq_script(), "--dsn", payq_db.dsn, "--schema", payq_db.schema, "worker",
                             "--app", "tasks"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("payq: ConfigError: --app tasks: cannot import it") and "nosuch_dependency" in line


def test_django_and_flask_report_a_missing_app_in_one_line(django_order_model: Any) -> None:
    from django.core.management import CommandError, call_command
    from django.test.utils import override_settings

    with override_settings(INSTALLED_APPS=["payq.contrib.django"]), pytest.raises(CommandError) as caught:
        call_command("payq_worker", "--app", "nosuch_module_of_the_test")
    assert caught.value.returncode == 64 and "no module named 'nosuch_module_of_the_test'" in str(caught.value)
    flask = pytest.importorskip("flask")
    from payq.contrib.flask import Payq

    app = flask.Flask(__name__)
    app.config.update(PAYQ_DSN="dbname=unused")
    Payq(app)
    result = app.test_cli_runner().invoke(args=["payq", "worker", "--app", "nosuch_module_of_the_test"])
    assert result.exit_code == 2 and "no module named 'nosuch_module_of_the_test'" in result.output
