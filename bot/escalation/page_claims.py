"""Claims on pages after their step fired: retries, takeover of a dead holder's pages, fencing.

A page is sent by whoever holds its claim (a token and a lease). Pages whose retry time came,
or whose holder died (lease over, or heartbeat missed), are claimed again here, one by one,
with a new token; the old holder finds its token gone before it sends (``still_mine``), so
a replica taken for dead leaves them to the new holder. Steps are claims.py.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from bot.escalation.claims import (
    CLAIM_COLUMNS,
    ESCALATIONS,
    PAGE_COLUMNS,
    PAGES,
    Claim,
    incident_of,
)
from bot.escalation.membership import Membership
from bot.escalation.pages import Incident, Page


class PageClaims:
    def __init__(self, engine: Engine, membership: Membership, clock: Callable[[], datetime],
                 lease_seconds: float) -> None:
        self.engine = engine
        self.membership = membership
        self.clock = clock
        self.lease_seconds = lease_seconds

    def _recoverable(self, now: datetime) -> Any:
        """Pages to (re)send now: retry time came, lease over, or holder stopped beating."""
        return ((PAGES.c.status == "pending") & (PAGES.c.next_attempt_at <= now)) | (
            (PAGES.c.status == "sending")
            & ((PAGES.c.claimed_until < now) | PAGES.c.claimed_by.in_(self.membership.dead_replicas(now)))
        )

    def recover(self, limit: int = 200) -> list[tuple[int, str]]:
        """Claim pages whose retry time came or whose holder died: (page id, new token) each."""
        now = self.clock()
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(PAGES.c.id).where(self._recoverable(now)).order_by(PAGES.c.id).limit(limit)
            ).scalars().all()
        claimed: list[tuple[int, str]] = []
        for delivery_id in ids:
            token = secrets.token_hex(8)
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(PAGES).where(PAGES.c.id == delivery_id, self._recoverable(now))
                    .values(status="sending", claim_token=token, claimed_by=self.membership.replica,
                            claimed_until=now + timedelta(seconds=self.lease_seconds))
                ).rowcount
            if taken == 1:
                claimed.append((delivery_id, token))
        return claimed

    def load(self, delivery_id: int, token: str) -> tuple[Incident, Page] | None:
        """A page this token holds, with its escalation (a retry, or a taken-over page)."""
        with self.engine.connect() as conn:
            page = conn.execute(select(*PAGE_COLUMNS, PAGES.c.escalation_id, PAGES.c.claim_token)
                                .where(PAGES.c.id == delivery_id)).first()
            if page is None or page.claim_token != token:
                return None
            row = conn.execute(select(*CLAIM_COLUMNS).where(ESCALATIONS.c.id == page.escalation_id)).first()
        if row is None:
            return None
        return incident_of(row), Page(page.id, page.key, page.kind, page.target, page.level,
                                      json.loads(page.payload or "{}"), page.attempts)

    def still_mine(self, delivery_ids: list[int], token: str) -> set[int]:
        """Fencing: which of these pages this claim still holds. A replica taken for dead
        (too slow to beat) finds its pages taken over and leaves them to the new holder."""
        if not delivery_ids:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(
                select(PAGES.c.id).where(PAGES.c.id.in_(delivery_ids), PAGES.c.claim_token == token)
            ).scalars())

    def surely_mine(self, claim: Claim) -> bool:
        """No other replica can have taken this claim over yet: no need to ask the database."""
        return self.membership.surely_alive_until(claim.lease_end)
