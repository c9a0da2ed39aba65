"""Replica membership: who is alive, by heartbeats in ``escalation_replicas``.

Every replica beats on each poll (on threads of its own, so a busy replica still beats).
Pages claimed by a replica that missed three beats (plus a second) are taken over by the
others; the poll spreads each step's timers over the live replicas.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Select, Table, delete, insert, select, update

from bot.store.models import EscalationReplica

REPLICAS = cast(Table, EscalationReplica.__table__)


def new_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Membership:
    def __init__(self, engine: Engine, poll_seconds: float, clock: Callable[[], datetime],
                 replica_id: str | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.replica = replica_id or new_replica_id()
        # Heartbeats come with every poll; three missed (plus a second) and a replica counts
        # as dead. A wrong guess is fenced: a slow holder re-checks its claim before sending.
        self.dead_after = 3 * poll_seconds + 1
        # Monotonic time of the last heartbeat this replica committed (-inf: none yet).
        self._beat_at = float("-inf")

    def heartbeat(self) -> None:
        """Say this replica is alive."""
        beat_started = time.monotonic()
        now = self.clock()
        with self.engine.begin() as conn:
            updated = conn.execute(update(REPLICAS).where(REPLICAS.c.id == self.replica).values(seen_at=now)).rowcount
            if not updated:
                conn.execute(insert(REPLICAS).values(id=self.replica, seen_at=now))
            # Forget replicas gone for a day, so the table stays small.
            conn.execute(delete(REPLICAS).where(REPLICAS.c.seen_at < now - timedelta(days=1)))
        self._beat_at = beat_started

    def live_replicas(self) -> list[str]:
        """Replicas that beat recently, sorted: the poll spreads first attempts over them."""
        since = self.clock() - timedelta(seconds=self.dead_after)
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(REPLICAS.c.id).where(REPLICAS.c.seen_at >= since).order_by(REPLICAS.c.id)
            ).scalars())

    def dead_replicas(self, now: datetime) -> Select[tuple[str]]:
        """A subquery: replicas that stopped beating (their claims may be taken over)."""
        return select(REPLICAS.c.id).where(REPLICAS.c.seen_at < now - timedelta(seconds=self.dead_after))

    def surely_alive_until(self, lease_end: float) -> bool:
        """Whether nobody can have taken over a claim of ours with this lease end (monotonic).

        Others take pages over when the lease ends or when our heartbeat is older than
        ``dead_after``; a second of margin covers clock differences between nodes.
        """
        now = time.monotonic()
        return now < lease_end - 1.0 and now < self._beat_at + self.dead_after - 1.0
