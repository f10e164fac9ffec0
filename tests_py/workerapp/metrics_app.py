"""Handlers for the metrics test: ``metrics.ok`` succeeds, ``metrics.flaky``
fails definitively (so both outcome counters move)."""

from __future__ import annotations

import payq


@payq.handler("metrics.ok")
def ok(task: payq.TaskRun) -> dict:
    return {"done": task.id}


@payq.handler("metrics.flaky")
def flaky(task: payq.TaskRun) -> None:
    raise payq.Fail("the provider said no")
