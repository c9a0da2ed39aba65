"""Long Google Cloud operations the bot follows (backups, restores, clones), kept in the database.

A follower holds a lease on its row and renews it on every poll. When the process dies,
the lease runs out and another replica, or the restarted bot, claims the row and resumes
following the same operation in the same Slack thread: nothing lives only in memory.
Each follower gets its own token, so a follower that lost its lease stops by itself.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from bot.store.models import Base

RUNNING = "running"
FINAL = ("done", "failed", "timeout")


class CloudOperation(Base):
    __tablename__ = "cloud_operations"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # backup, restore, clone
    project: Mapped[str] = mapped_column(String(64))
    instance: Mapped[str] = mapped_column(String(98))
    operation: Mapped[str | None] = mapped_column(String(128))  # the API's operation name being followed
    phase: Mapped[str] = mapped_column(String(32))
    request: Mapped[str] = mapped_column(Text)  # JSON: what was asked (never a secret)
    state: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what happened so far (ids, times)
    requested_by: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    progress_ts: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def request_data(self) -> dict[str, Any]:
        return dict(json.loads(self.request or "{}"))

    def state_data(self) -> dict[str, Any]:
        return dict(json.loads(self.state or "{}"))


def _now() -> datetime:
    return datetime.now(UTC)


class CloudOperationStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(self, *, kind: str, project: str, instance: str, operation: str | None, phase: str,
               request: dict[str, Any], state: dict[str, Any], requested_by: str, command: str,
               channel_id: str | None, lease_seconds: float) -> tuple[CloudOperation, str]:
        """A new row, leased to the caller; returns it with the follower's token."""
        now = _now()
        token = uuid.uuid4().hex
        row = CloudOperation(
            id=uuid.uuid4().hex[:12], kind=kind, project=project, instance=instance, operation=operation,
            phase=phase, request=json.dumps(request, sort_keys=True), state=json.dumps(state, sort_keys=True),
            requested_by=requested_by, command=command, channel_id=channel_id, status=RUNNING,
            lease_owner=token, lease_until=now + timedelta(seconds=lease_seconds), created_at=now, updated_at=now,
        )
        with self._sessions.begin() as session:
            session.add(row)
        return row, token

    def get(self, row_id: str) -> CloudOperation | None:
        with self._sessions() as session:
            return session.get(CloudOperation, row_id)

    def recent(self, instance: str, limit: int = 10) -> list[CloudOperation]:
        with self._sessions() as session:
            return list(session.execute(
                select(CloudOperation).where(CloudOperation.instance == instance)
                .order_by(CloudOperation.created_at.desc()).limit(limit)).scalars())

    def renew(self, row_id: str, token: str, lease_seconds: float, **changes: Any) -> bool:
        """Extend our lease and record progress; False when another follower owns the row now."""
        values: dict[str, Any] = {"lease_until": _now() + timedelta(seconds=lease_seconds), "updated_at": _now()}
        for key in ("operation", "phase", "detail"):
            if key in changes:
                values[key] = changes[key]
        if "state" in changes:
            values["state"] = json.dumps(changes["state"], sort_keys=True)
        with self._sessions.begin() as session:
            cursor = session.execute(update(CloudOperation).where(
                CloudOperation.id == row_id, CloudOperation.lease_owner == token,
                CloudOperation.status == RUNNING).values(**values))
            return bool(getattr(cursor, "rowcount", 0) == 1)

    def finish(self, row_id: str, token: str, status: str, detail: str) -> bool:
        assert status in FINAL
        now = _now()
        with self._sessions.begin() as session:
            cursor = session.execute(update(CloudOperation).where(
                CloudOperation.id == row_id, CloudOperation.lease_owner == token,
                CloudOperation.status == RUNNING).values(
                status=status, detail=detail[:4000], finished_at=now, updated_at=now, lease_until=None))
            return bool(getattr(cursor, "rowcount", 0) == 1)

    def release(self, row_id: str, token: str) -> None:
        """Hand the row back now (shutdown): the next claim need not wait for the lease to run out."""
        with self._sessions.begin() as session:
            session.execute(update(CloudOperation).where(
                CloudOperation.id == row_id, CloudOperation.lease_owner == token,
                CloudOperation.status == RUNNING).values(lease_until=_now() - timedelta(seconds=1)))

    def attach(self, row_id: str, channel_id: str, thread_ts: str, progress_ts: str | None) -> None:
        """Where the progress is shown, so a resumed follower updates the same message."""
        with self._sessions.begin() as session:
            session.execute(update(CloudOperation).where(CloudOperation.id == row_id).values(
                channel_id=channel_id, thread_ts=thread_ts, progress_ts=progress_ts))

    def claim_abandoned(self, lease_seconds: float, limit: int = 5) -> list[tuple[CloudOperation, str]]:
        """Rows still running whose follower stopped renewing: each claimed by one caller only."""
        now = _now()
        with self._sessions() as session:
            candidates = list(session.execute(
                select(CloudOperation.id).where(
                    CloudOperation.status == RUNNING,
                    or_(CloudOperation.lease_until.is_(None), CloudOperation.lease_until < now))
                .limit(limit)).scalars())
        claimed: list[tuple[CloudOperation, str]] = []
        for row_id in candidates:
            token = uuid.uuid4().hex
            with self._sessions.begin() as session:
                cursor = session.execute(update(CloudOperation).where(
                    CloudOperation.id == row_id, CloudOperation.status == RUNNING,
                    or_(CloudOperation.lease_until.is_(None), CloudOperation.lease_until < now),
                ).values(lease_owner=token, lease_until=now + timedelta(seconds=lease_seconds), updated_at=now))
                won = getattr(cursor, "rowcount", 0) == 1
            if won:
                row = self.get(row_id)
                if row is not None:
                    claimed.append((row, token))
        return claimed
