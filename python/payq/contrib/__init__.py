"""payq inside web frameworks.

- :mod:`payq.contrib.django`: an installable Django app (settings, ledger
  and enqueue on Django's connection, ``payq_migrate`` and ``payq_worker``);
- :mod:`payq.contrib.flask`: the :class:`~payq.contrib.flask.Payq` Flask
  extension (a transaction per request, ``flask payq migrate|worker``).

Both are thin: the ledger and the queue run through payq's application
connection executor (:mod:`payq.appconn`), the worker through ``payq``'s
command line. See docs/integrations.md.
"""
