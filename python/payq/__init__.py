"""payq: money-moving side effects made safe on PostgreSQL.

A double-entry ledger and a transactional outbox queue share one database
transaction. Start with :func:`connect`.
"""

from __future__ import annotations

from payq.errors import *  # noqa: F401,F403  (every exception is public)
from payq.errors import __all__ as _errors_all
from payq.database import Database, MigrateReport, Transaction, connect
from payq.embedded import EmbeddedServer, EmbeddedStatus
from payq.appconn import app_executor
from payq import ledger
from payq.ledger import Account, AuditReport, Entry, Hold, Ledger, LedgerTransaction
from payq import outbox
from payq.outbox import Attempt, EnqueueResult, Settle, Task, TaskRequest
from payq import keyring
from payq.keyring import Keyring
from payq.worker import Fail, Retry, TaskRun, Unknown, Worker, handler, http_handler
from payq import http
from payq.http import SecretEnv, secret_env
from payq._serving import ServingLimits
from payq import aio
from payq.money import (
    AmountLike,
    Currency,
    Fee,
    Money,
    Rounding,
    currency_get,
    currency_known,
    currency_register,
    to_minor,
)

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Database",
    "Transaction",
    "MigrateReport",
    "EmbeddedServer",
    "EmbeddedStatus",
    "app_executor",
    "ledger",
    "Ledger",
    "Account",
    "Entry",
    "Hold",
    "LedgerTransaction",
    "AuditReport",
    "outbox",
    "Settle",
    "Task",
    "TaskRequest",
    "keyring",
    "Keyring",
    "EnqueueResult",
    "Attempt",
    "handler",
    "http_handler",
    "http",
    "secret_env",
    "SecretEnv",
    "ServingLimits",
    "aio",
    "Worker",
    "TaskRun",
    "Retry",
    "Fail",
    "Unknown",
    "Money",
    "Fee",
    "Rounding",
    "Currency",
    "AmountLike",
    "to_minor",
    "currency_get",
    "currency_known",
    "currency_register",
    "__version__",
    *_errors_all,
]
