"""flaskshop: the payq Flask example. ``flask --app flaskshop run``.

Configuration comes from the environment: ``PAYQ_DSN`` (a libpq string,
``host=... dbname=...``) or ``DATABASE_URL`` (``postgresql://...``) names
the PostgreSQL database shared by the shop's table and payq's schema; with
neither, payq's embedded server is started (``payq up``).
"""

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import click
import psycopg
from flask import Flask, current_app
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

import payq
from payq.contrib.flask import Payq

payq_ext = Payq()


@dataclass
class Shop:
    """What the views and the handlers need besides payq."""

    engine: Engine
    sessions: "sessionmaker[Session]"


def shop() -> Shop:
    return current_app.extensions["flaskshop"]  # type: ignore[no-any-return]


def _dsn() -> str:
    configured = os.environ.get("PAYQ_DSN") or os.environ.get("DATABASE_URL")
    # payq's own default: a private PostgreSQL server on a unix socket.
    return configured or payq.EmbeddedServer().up()


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        PAYQ_SCHEMA=os.environ.get("PAYQ_SCHEMA", "payq"),
        PAYQ_HANDLERS=["flaskshop.tasks"],   # for `flask payq worker`
        PAYQ_QUEUES=["payouts"],
        PAYQ_CONCURRENCY=2,
    )
    if config:
        app.config.update(config)
    if not app.config.get("PAYQ_DSN"):
        app.config["PAYQ_DSN"] = _dsn()
    dsn = app.config["PAYQ_DSN"]
    # The shop's own tables, through SQLAlchemy, in the same database.
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    app.extensions["flaskshop"] = Shop(engine, sessionmaker(engine))
    payq_ext.init_app(app)

    from flaskshop.views import blueprint

    app.register_blueprint(blueprint)

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables."""
        from flaskshop.models import Base

        Base.metadata.create_all(engine)
        click.echo("created the shop's tables")

    return app
