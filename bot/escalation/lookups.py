"""Lookups for the procedures and tests: ORM rows and views, read-only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import UserError
from bot.escalation.state import OPEN
from bot.escalation.views import view_of
from bot.ports import EscalationView
from bot.store.models import Escalation, EscalationDelivery, EscalationEvent


class Lookups:
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock

    def find(self, channel_id: str | None, ref: str | None) -> Escalation:
        """By id, or the only open escalation of the channel (slash commands carry no thread)."""
        with self.sessions() as session:
            if ref:
                row = session.get(Escalation, ref.strip().upper())
                if row is None:
                    raise UserError(f"There is no escalation `{ref[:20]}`.", "The id is on the escalation's card, e.g. `E7K3Q2X`.")
                return row
            rows = session.execute(
                select(Escalation).where(Escalation.channel_id == (channel_id or ""), Escalation.status.in_(OPEN))
                .order_by(Escalation.created_at.desc()).limit(10)
            ).scalars().all()
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise UserError("There is no open escalation in this channel.", "Give its id, e.g. `/aia ack E7K3Q2X`.")
        listed = ", ".join(f"`{r.id}` {r.title[:40]}" for r in rows)
        raise UserError(f"{len(rows)} escalations are open here: {listed}.", "Say which one, e.g. `/aia ack E7K3Q2X`.")

    def open_escalations(self) -> list[EscalationView]:
        with self.sessions() as session:
            rows = session.execute(
                select(Escalation).where(Escalation.status.in_(OPEN)).order_by(Escalation.created_at.desc()).limit(20)
            ).scalars().all()
        return [self.view(r) for r in rows]

    def get(self, escalation_id: str) -> Escalation | None:
        with self.sessions() as session:
            return session.get(Escalation, escalation_id)

    def view(self, row: Escalation) -> EscalationView:
        return view_of(row, self.clock)

    def events_of(self, escalation_id: str) -> list[EscalationEvent]:
        with self.sessions() as session:
            return list(session.execute(
                select(EscalationEvent).where(EscalationEvent.escalation_id == escalation_id).order_by(EscalationEvent.id)
            ).scalars())

    def pages_of(self, escalation_id: str) -> list[EscalationDelivery]:
        with self.sessions() as session:
            return list(session.execute(
                select(EscalationDelivery).where(EscalationDelivery.escalation_id == escalation_id)
                .order_by(EscalationDelivery.id)
            ).scalars())

    def by_group(self, group_id: int) -> EscalationView | None:
        with self.sessions() as session:
            row = session.execute(select(Escalation).where(Escalation.alert_group_id == group_id)).scalar_one_or_none()
        return self.view(row) if row else None
