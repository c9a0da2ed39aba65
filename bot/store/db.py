"""Engine, sessions and migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same in every replica.
_MIGRATION_LOCK_KEY = 0x41494142


def normalise_url(url: str) -> str:
    """``postgresql://`` would pick psycopg2, which we do not ship: use psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001 - SQLAlchemy event signature
            cursor = dbapi_conn.cursor()
            # WAL lets the console read while the worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_writer_engine(engine: Engine) -> Engine | None:
    """PostgreSQL: a small pool for the alert webhook's one INSERT, in autocommit and without
    a pre-ping, so the INSERT is its one round trip (not ping, BEGIN, INSERT, COMMIT: under a
    storm each cost a wait for the server and another for the GIL). SQLite: None (one writer;
    the inbox queues its writes itself)."""
    if engine.dialect.name != "postgresql":
        return None
    return create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=8)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Upgrade to the newest schema. Replicas starting together take turns."""
    config = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, "heads")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()
    else:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "heads")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
