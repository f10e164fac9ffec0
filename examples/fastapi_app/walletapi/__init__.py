"""walletapi: payq in a FastAPI application, on asyncpg.

``create_app()`` builds the application: an asyncpg pool for the
application's own table (``withdrawal``) and ``payq.aio`` for payq's
connections. ``POST /withdrawals`` holds the amount, records the withdrawal
and enqueues its payout in **one** asyncpg transaction; see README.md.
"""

from __future__ import annotations

import os
import shlex
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional

import asyncpg
from fastapi import FastAPI

import payq

__all__ = ["create_app", "Settings", "init_db"]

CURRENCY = "EUR"
NAMESPACE = "walletapi"
PAYOUT_KIND = "walletapi.payout"
PAYOUT_QUEUE = "walletapi.payouts"
# The application's own connections: a small pool, as a web process has.
POOL_SIZE_MAX = 10


class Settings:
    """Where the databases are: ``WALLETAPI_DSN`` (or ``PAYQ_DSN``), payq's
    schema (``PAYQ_SCHEMA``, default ``payq``) and the application's own
    schema (``WALLETAPI_SCHEMA``, default ``walletapi``)."""

    def __init__(self, dsn: Optional[str] = None, payq_schema: Optional[str] = None,
                 app_schema: Optional[str] = None) -> None:
        self.dsn = dsn or os.environ.get("WALLETAPI_DSN") or os.environ.get("PAYQ_DSN") or ""
        if not self.dsn:
            raise SystemExit("set WALLETAPI_DSN (or PAYQ_DSN) to the database's DSN")
        self.payq_schema = payq_schema or os.environ.get("PAYQ_SCHEMA", "payq")
        self.app_schema = app_schema or os.environ.get("WALLETAPI_SCHEMA", "walletapi")


def asyncpg_params(dsn: str) -> Dict[str, Any]:
    """asyncpg's connect arguments for a URL or a libpq ``key=value`` DSN."""
    if dsn.startswith(("postgres://", "postgresql://")):
        return {"dsn": dsn}
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    params: Dict[str, Any] = {}
    for item in shlex.split(dsn):
        key, _, value = item.partition("=")
        if key in names:
            params[names[key]] = value
    return params


async def init_db(settings: Settings) -> None:
    """The application's table (idempotent). payq's schema is migrated by
    ``payq migrate``."""
    connection = await asyncpg.connect(**asyncpg_params(settings.dsn))
    try:
        schema = settings.app_schema
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await connection.execute(f"""
            CREATE TABLE IF NOT EXISTS "{schema}".withdrawal (
                id bigserial PRIMARY KEY,
                idempotency_key text NOT NULL UNIQUE,
                owner text NOT NULL,
                amount numeric NOT NULL,
                payout_to text NOT NULL,
                hold_id bigint,
                task_id bigint,
                created_at timestamptz NOT NULL DEFAULT now())""")
    finally:
        await connection.close()


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    """The application, its connections opened and closed with its lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.pool = await asyncpg.create_pool(**asyncpg_params(settings.dsn), min_size=1,
                                                   max_size=POOL_SIZE_MAX)
        app.state.payq = await payq.aio.connect(settings.dsn, schema=settings.payq_schema)
        try:
            yield
        finally:
            await app.state.payq.close()
            await app.state.pool.close()

    app = FastAPI(title="walletapi", lifespan=lifespan)
    from walletapi import views

    app.include_router(views.router)
    views.add_error_answers(app)
    return app
