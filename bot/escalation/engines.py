"""The hot path's own small connection pools (PostgreSQL): no pre-ping, retried once instead.

The core's engine pings every connection it hands out (``pool_pre_ping``): a round trip,
with its wait for the server and for the GIL, before each transaction. The claimer and the
sent marks run many short transactions; their pools skip the ping, and a statement that
fails on a connection the server dropped (a restart, a failover) is run once more on a fresh
one — SQLAlchemy invalidates the dead connection (and the pool's others) on that error.

Sent marks commit without waiting for the WAL flush (``synchronous_commit=off``) and in
autocommit (one round trip): a mark lost in a database crash only means a page is sent
again, which the Slack thread check and the webhook dedup key absorb. Claims stay durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")


class HotEngines:
    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql":
            # SQLite: one file, one process; its own engine already serialises what it must.
            self.claims = self.marks = engine
            return
        self.claims = create_engine(engine.url, pool_size=2, max_overflow=2, pool_pre_ping=False)
        self.marks = create_engine(engine.url, pool_size=1, max_overflow=1, pool_pre_ping=False,
                                   isolation_level="AUTOCOMMIT",
                                   connect_args={"options": "-c synchronous_commit=off"})

    def dispose(self) -> None:
        self.claims.dispose()
        self.marks.dispose()


def retry_once(work: Callable[[], T]) -> T:
    """Run ``work``; once more if it failed because its pooled connection was dead."""
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return work()
