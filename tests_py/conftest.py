# payq_dsn (one throwaway cluster per session) and payq_db (a fresh migrated
# payq per test: a copy of a migrated template database, or a fresh schema
# in payq_dsn's database for a test that uses payq_dsn too) come from payq's
# own pytest plugin, as users get them.
pytest_plugins = ["payq.testing.pytest_plugin"]
