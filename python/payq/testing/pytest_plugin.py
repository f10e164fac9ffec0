"""pytest fixtures: ``payq_dsn`` (one throwaway cluster per test session, or
``PAYQ_TEST_DSN``) and ``payq_db`` (a fresh migrated schema per test).

Enable with ``pytest -p payq.testing.pytest_plugin`` or
``pytest_plugins = ["payq.testing.pytest_plugin"]`` in a conftest.py.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

import payq
from payq.testing import fresh_schema, throwaway_cluster


@pytest.fixture(scope="session")
def payq_dsn() -> Iterator[str]:
    """DSN of the session's throwaway cluster."""
    given = os.environ.get("PAYQ_TEST_DSN")
    if given:
        yield given
        return
    with throwaway_cluster() as dsn:
        yield dsn


@pytest.fixture
def payq_db(payq_dsn: str) -> Iterator[payq.Database]:
    """A Database on a fresh, migrated schema, dropped after the test."""
    with fresh_schema(payq_dsn) as db:
        yield db
