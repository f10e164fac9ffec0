import multiprocessing

import payq
from payq._native import core
from payq.testing import fresh_schema


def test_migrate_applies_once_then_is_a_noop(payq_dsn):
    known = core.migrations_known()
    with fresh_schema(payq_dsn, migrate=False) as db:
        assert db.schema_version() == 0
        first = db.migrate()
        assert first.applied == [version for version, _ in known]
        again = db.migrate()
        assert again.applied == []
        assert again.version_current == known[-1][0]
        with db.transaction() as t:
            assert t.execute("SELECT count(*) FROM @schema@.schema_migrations") == [(str(len(known)),)]


def _migrate_in_process(dsn, schema, queue):
    try:
        queue.put(len(payq.connect(dsn, schema=schema, migrate=False).migrate().applied))
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(repr(exc))


def test_concurrent_migrating_processes_are_safe(payq_dsn):
    with fresh_schema(payq_dsn, migrate=False) as db:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        processes = [ctx.Process(target=_migrate_in_process, args=(payq_dsn, db.schema, queue)) for _ in range(4)]
        for process in processes:
            process.start()
        results = [queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert all(isinstance(r, int) for r in results), results
        assert sum(results) == len(core.migrations_known())


def test_edited_migration_is_refused(payq_db):
    with payq_db.transaction() as t:
        t.execute("UPDATE @schema@.schema_migrations SET checksum = '0' WHERE version = 1")
    try:
        payq_db.migrate()
    except payq.MigrationError:
        pass
    else:
        raise AssertionError("an edited migration must be refused")
