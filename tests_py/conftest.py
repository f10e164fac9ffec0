# payq_dsn (one throwaway cluster per session) and payq_db (a fresh migrated
# schema per test) come from payq's own pytest plugin, as users get them.
pytest_plugins = ["payq.testing.pytest_plugin"]
