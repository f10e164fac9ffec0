"""The words that cross languages are written once, in the core
(cpp/include/payq/vocabulary.hpp), and every other place agrees with it:
the live schema's CHECK constraints, payq.errors, the Python package, the
CLI, the dashboard, the type stub and docs/errors.md. Adding a state, an
outcome or an error class in one place only fails here."""

from __future__ import annotations

import argparse
import ast
import re
import threading
import typing
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import pytest

import payq
import payq.cli
import payq.http
from payq import errors
from payq._native import core

ROOT = Path(__file__).resolve().parent.parent


def _quoted_texts(definition: str) -> List[str]:
    """The 'text' literals of a CHECK constraint's definition, in order."""
    return re.findall(r"'((?:[^']|'')*)'::text", definition)


def _domain_check(db: payq.Database, domain: str) -> str:
    with db.transaction() as t:
        [(definition,)] = t.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_type ty ON ty.oid = c.contypid "
            "JOIN pg_namespace n ON n.oid = ty.typnamespace WHERE n.nspname = $1 AND ty.typname = $2",
            [db.schema, domain])
    assert definition is not None
    return definition


def _column_type(db: payq.Database, table: str, column: str) -> str:
    with db.transaction() as t:
        [(name,)] = t.execute(
            "SELECT ty.typname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type ty ON ty.oid = a.atttypid "
            "WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3", [db.schema, table, column])
    assert name is not None
    return name


# ---------------------------------------------------------------- the schema


def test_the_schemas_task_states_are_the_cores(payq_db: payq.Database) -> None:
    assert _column_type(payq_db, "task", "state") == "task_state"
    assert tuple(_quoted_texts(_domain_check(payq_db, "task_state"))) == core.TASK_STATES


def test_the_schemas_attempt_outcomes_are_the_cores(payq_db: payq.Database) -> None:
    assert _column_type(payq_db, "task_attempt", "outcome") == "attempt_outcome"
    assert tuple(_quoted_texts(_domain_check(payq_db, "attempt_outcome"))) == core.ATTEMPT_OUTCOMES
    assert core.ATTEMPT_OUTCOMES == (*core.OUTCOMES, "returned")


def test_the_schemas_queue_name_rule_is_the_cores(payq_db: payq.Database) -> None:
    with payq_db.transaction() as t:
        definitions = [row[0] for row in t.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = r.relnamespace "
            "WHERE n.nspname = $1 AND r.relname = 'queue' AND c.contype = 'c'", [payq_db.schema])]
    patterns = [text for d in definitions if d and "~" in d for text in _quoted_texts(d)]
    assert patterns == [core.QUEUE_NAME_PATTERN]
    assert core.QUEUE_NAME_PATTERN.endswith(f"{{1,{core.QUEUE_NAME_MAX}}}$")


@pytest.mark.parametrize("name, valid", [
    ("default", True), ("payouts.cny:fast-1_x", True), ("q" * 100, True),
    ("", False), ("q" * 101, False), ("pay outs", False), ("payouts/cny", False), ("zahlungsausgänge", False),
])
def test_enqueue_refuses_exactly_the_queue_names_the_pattern_refuses(payq_db: payq.Database, name: str,
                                                                     valid: bool) -> None:
    assert bool(re.fullmatch(core.QUEUE_NAME_PATTERN, name)) is valid
    if valid:
        assert payq_db.enqueue("noop", queue=name).created
    else:
        with pytest.raises(payq.InvalidArgument):
            payq_db.enqueue("noop", queue=name)


# ---------------------------------------------------------------- errors


def test_every_core_error_class_is_a_payq_errors_class_and_back() -> None:
    core_names = [name for name, _, _ in core.ERROR_CLASSES]
    python_names = [name for name, value in vars(errors).items()
                    if isinstance(value, type) and issubclass(value, errors.Error)]
    assert sorted(core_names) == sorted(python_names) == sorted(errors.__all__)
    assert len(set(core_names)) == len(core_names)


def test_each_error_class_has_the_cores_base() -> None:
    for name, base, _ in core.ERROR_CLASSES:
        cls = getattr(errors, name)
        payq_bases = [b.__name__ for b in cls.__bases__ if issubclass(b, errors.Error)]
        assert payq_bases == ([] if base is None else [base]), name


def test_the_sqlstate_classes_are_what_the_errors_carry() -> None:
    by_name = {name: sqlstate_class for name, _, sqlstate_class in core.ERROR_CLASSES}
    assert by_name["TransientError"] == "40"
    assert by_name["ConnectionLost"] == "08"
    for name, sqlstate_class in by_name.items():
        if sqlstate_class is None:
            continue
        with pytest.raises(errors.DatabaseError) as info:
            core._raise_for_test(name)
        assert (info.value.sqlstate or "").startswith(sqlstate_class), name


def test_the_docs_list_every_error_class() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in core.ERROR_CLASSES if f"`{name}`" not in text]
    assert missing == []


# ---------------------------------------------------------------- Python, CLI, dashboard, stub


def test_the_python_package_reads_the_cores_lists() -> None:
    assert payq.outbox.TASK_STATES == core.TASK_STATES
    assert payq.outbox.OUTCOMES == core.OUTCOMES
    assert payq.outbox.ACTIONS == core.ACTIONS
    assert dict(payq.outbox.ACTIONS_BY_STATE) == {s: tuple(a) for s, a in core.ACTIONS_BY_STATE.items()}
    assert set(core.ACTIONS_BY_STATE) == set(core.TASK_STATES)
    assert {a for allowed in core.ACTIONS_BY_STATE.values() for a in allowed} == set(core.ACTIONS)
    worker_outcomes = {payq.worker.Retry.outcome, payq.worker.Fail.outcome, payq.worker.Unknown.outcome}
    assert worker_outcomes | {"success"} == set(core.OUTCOMES)
    # A Literal must be spelled out for type checkers: it may not drift.
    assert typing.get_args(payq.http.OutcomeName) == core.OUTCOMES


def _subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    [choices] = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(choices)


def test_the_clis_states_and_actions_are_the_cores() -> None:
    tasks = _subcommands(payq.cli._parser())["tasks"]
    commands = _subcommands(tasks)
    [state] = [a for a in commands["list"]._actions if "--state" in a.option_strings]
    assert tuple(state.choices) == core.TASK_STATES
    assert set(core.ACTIONS) <= set(commands)


def test_the_cli_counts_every_state(payq_db: payq.Database, payq_dsn: str, capsys: Any) -> None:
    payq_db.enqueue("noop")
    assert payq.cli.main(["--dsn", payq_dsn, "--schema", payq_db.schema, "stats"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert tuple(header[1:]) == core.TASK_STATES


def test_the_dashboard_routes_exactly_the_cores_actions() -> None:
    from payq.dashboard import app

    [route] = [r for r in app._ROUTES if r.method == "POST" and r.pattern.match("/tasks/1/retry")]
    for action in core.ACTIONS:
        assert route.pattern.match(f"/tasks/1/{action}"), action
    assert not route.pattern.match("/tasks/1/delete")


def _dashboard_modules() -> List[Any]:
    import importlib
    import pkgutil

    import payq.dashboard

    return [importlib.import_module(f"payq.dashboard.{m.name}") for m in pkgutil.iter_modules(payq.dashboard.__path__)]


def _dashboard_attr(name: str) -> Any:
    [found] = {id(getattr(m, name)): getattr(m, name) for m in _dashboard_modules() if hasattr(m, name)}.values()
    return found


@pytest.mark.parametrize("state", core.TASK_STATES)
def test_the_dashboard_offers_the_actions_the_core_allows(state: str) -> None:
    from payq.dashboard.render import Html

    ctx = SimpleNamespace(url=lambda path, **query: path, csrf_field=lambda: Html(""))
    task = SimpleNamespace(id=1, state=state, attempt=0, error=None, settlement=payq.outbox.TaskSettlement())
    page = str(_dashboard_attr("_action_forms")(ctx, task, ""))
    offered = tuple(a for a in core.ACTIONS if f'id="form-{a}"' in page)
    assert offered == tuple(a for a in core.ACTIONS if a in core.ACTIONS_BY_STATE[state])


def test_the_dashboard_lists_the_cores_states_and_queue_bound() -> None:
    modules = _dashboard_modules()
    assert any(hasattr(m, "TASK_STATES") for m in modules)
    for module in modules:
        if hasattr(module, "TASK_STATES"):
            assert tuple(module.TASK_STATES) == core.TASK_STATES, module.__name__
        if hasattr(module, "LIVE_STATES"):
            assert set(module.LIVE_STATES) <= set(core.TASK_STATES), module.__name__
        if hasattr(module, "QUEUE_NAME_MAX"):
            assert module.QUEUE_NAME_MAX == core.QUEUE_NAME_MAX, module.__name__


def test_the_type_stub_declares_the_vocabulary() -> None:
    tree = ast.parse((ROOT / "python" / "payq" / "_core.pyi").read_text(encoding="utf-8"))
    declared = {node.target.id for node in tree.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    exported = {name for name in dir(core) if name.isupper()}
    assert exported <= declared
    assert {"TASK_STATES", "OUTCOMES", "ATTEMPT_OUTCOMES", "ACTIONS", "ACTIONS_BY_STATE", "QUEUE_NAME_MAX",
            "QUEUE_NAME_PATTERN", "ERROR_CLASSES"} <= exported


# ---------------------------------------------------------------- behaviour behind the lists


def _task_in(db: payq.Database, state: str, queue: str) -> int:
    """A task alone in `queue`, brought into `state` the way the worker would."""
    held = state == "held"
    attempts = 1 if state in ("dead", "needs_review") else 3
    task_id = db.enqueue("noop", queue=queue, held=held, max_attempts=attempts).task_id
    if state in ("held", "pending"):
        return task_id
    if state == "cancelled":
        db.tasks.cancel(task_id, actor="test")
        return task_id
    [task] = core.outbox_claim(db._core, queue, "test-worker", 1)
    if state == "running":
        return task_id
    outcome = {"succeeded": "success", "dead": "fail", "needs_review": "unknown"}[state]
    core.outbox_complete(db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                         outcome=outcome, worker_id="test-worker", duration_ms=0)
    return task_id


def _act(db: payq.Database, task_id: int, action: str) -> None:
    if action == "resolve":
        db.tasks.resolve(task_id, applied=False, actor="test")
    else:
        getattr(db.tasks, action)(task_id, actor="test")


@pytest.mark.parametrize("state", core.TASK_STATES)
def test_the_outbox_allows_an_action_exactly_in_the_states_the_table_names(payq_db: payq.Database,
                                                                           state: str) -> None:
    for action in core.ACTIONS:
        task_id = _task_in(payq_db, state, f"vocab-{state}-{action}")
        assert payq_db.tasks.get(task_id).state == state
        if action in core.ACTIONS_BY_STATE[state]:
            _act(payq_db, task_id, action)
        else:
            with pytest.raises(payq.InvalidState):
                _act(payq_db, task_id, action)
            assert payq_db.tasks.get(task_id).state == state


def test_an_unknown_outcome_is_refused_and_nothing_is_written(payq_db: payq.Database) -> None:
    task_id = payq_db.enqueue("noop", queue="vocab-outcome").task_id
    [task] = core.outbox_claim(payq_db._core, "vocab-outcome", "test-worker", 1)
    with pytest.raises(payq.InvalidArgument, match="unknown outcome 'later'"):
        core.outbox_complete(payq_db._core, task_id=task.id, lease_token=task.lease_token, attempt=task.attempt,
                             outcome="later", worker_id="test-worker", duration_ms=0)
    assert payq_db.tasks.get(task_id).state == "running"
    assert payq_db.tasks.attempts(task_id) == []


def test_a_handler_outcome_payq_cannot_read_is_never_a_silent_retry(payq_db: payq.Database) -> None:
    registry = payq.worker.Registry()

    class Later(payq.worker.Retry):
        outcome = "later"  # not an outcome: the engine must refuse it

    @registry.handler("vocab.later")
    def later(task: Any) -> None:
        raise Later("come back")

    task_id = payq_db.enqueue("vocab.later", queue="vocab-later", max_attempts=1).task_id
    worker = payq.worker.Worker(payq_db, queues=["vocab-later"], registry=registry, listen=False, maintenance=False,
                                poll_interval=timedelta(milliseconds=20), alerts=False, log=False)
    recorded = threading.Event()
    worker.start()
    try:
        for _ in range(1500):  # 30 s at most
            if payq_db.tasks.attempts(task_id):
                recorded.set()
                break
            recorded.wait(0.02)
    finally:
        worker.stop()
    assert recorded.is_set()
    [attempt] = payq_db.tasks.attempts(task_id)
    assert "unknown outcome 'later'" in (attempt.error or "")
    assert worker.stats()["handler_exceptions"] == 1
