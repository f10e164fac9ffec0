"""pytest fixtures: ``payq_dsn`` (one throwaway cluster per test session, or
``PAYQ_TEST_DSN``) and ``payq_db`` (a fresh migrated payq per test).

``payq_db`` lives in a database of its own, copied from a template that is
migrated once per cluster: much cheaper than migrating a schema per test.
A test that also uses ``payq_dsn`` (itself or through another fixture)
connects to that DSN's database, so for it ``payq_db`` is a fresh migrated
schema there (:func:`payq.testing.fresh_schema`), as it is for every test
when the server may not create databases or psql is missing.

Enable with ``pytest -p payq.testing.pytest_plugin`` or
``pytest_plugins = ["payq.testing.pytest_plugin"]`` in a conftest.py.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterator, Optional

import pytest

import payq
from payq.testing import FAILED_LOGS_DIR, _DatabaseCopies, fresh_schema, throwaway_cluster


class PerTestSchemaWarning(UserWarning):
    """``payq_db`` cannot copy databases here (no psql, or a role without
    CREATEDB) and migrates a schema per test instead: slower, as correct."""


@pytest.fixture(scope="session")
def payq_cluster_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of the session's throwaway cluster (or ``PAYQ_TEST_DSN``), on its
    main database. When tests failed, the cluster's server log is kept in
    :data:`payq.testing.FAILED_LOGS_DIR`, and the terminal says where."""
    given = os.environ.get("PAYQ_TEST_DSN")
    if given:
        yield given
        return

    def failed() -> bool:
        if request.session.testsfailed == 0:
            return False
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"payq: the test cluster's server log is kept in "
                                f"{FAILED_LOGS_DIR}/server-{os.getpid()}.log")
        return True

    with throwaway_cluster(keep_log_if=failed) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def payq_dsn(payq_cluster_dsn: str) -> str:
    """DSN of the session's throwaway cluster (or ``PAYQ_TEST_DSN``)."""
    return payq_cluster_dsn


@pytest.fixture(scope="session")
def payq_database_copies(payq_cluster_dsn: str) -> Iterator[Optional[_DatabaseCopies]]:
    """Copies of the cluster's migrated template for ``payq_db``; None (and a
    :class:`PerTestSchemaWarning`) where they cannot be made."""
    try:
        copies = _DatabaseCopies(payq_cluster_dsn)
    except payq.ConfigError as error:
        copies = None
        reason = str(error)
    except payq.DatabaseError as error:
        # A role without CREATEDB; any other failure is the session's error.
        if "permission denied" not in str(error):
            raise
        copies = None
        reason = str(error)
    if copies is None:
        warnings.warn(PerTestSchemaWarning(f"payq_db: a migrated schema per test instead of a database: {reason}"))
        yield None
        return
    try:
        yield copies
    finally:
        copies.close()


@pytest.fixture
def payq_db(payq_cluster_dsn: str, payq_database_copies: Optional[_DatabaseCopies],
            request: pytest.FixtureRequest) -> Iterator[payq.Database]:
    """A Database on a fresh, migrated payq, dropped after the test: in a
    database of its own, or in a schema of ``payq_dsn``'s database when the
    test uses ``payq_dsn`` too."""
    if payq_database_copies is None or "payq_dsn" in request.fixturenames:
        with fresh_schema(payq_cluster_dsn) as db:
            yield db
        return
    name, db = payq_database_copies.take()
    try:
        yield db
    finally:
        # Dropped when the next test takes a copy: this test's objects may
        # still hold connections until pytest lets go of them.
        payq_database_copies.give_back(name, db, drop_now=False)
