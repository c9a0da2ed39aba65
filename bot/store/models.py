"""Tables. Changing one means a new Alembic revision in migrations/versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AuditEntry(Base):
    """One audited action. Append-only; each row carries the hash of the previous one."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    risk: Mapped[str | None] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """A single row holding the newest hash: locking it serialises appends across replicas."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class ApprovalRequest(Base):
    """A destructive procedure waiting for (or past) its second person.

    The row is the truth for every replica: decisions are compare-and-set updates
    on ``status``, and execution first claims the row with a token, so a request
    runs at most once whatever clicks, retries or restarts do.
    """

    __tablename__ = "approval_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    procedure: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[str] = mapped_column(Text)  # canonical JSON of the parsed arguments
    command: Mapped[str] = mapped_column(Text)  # what the requester typed, for people
    target_key: Mapped[str] = mapped_column(String(255))
    snapshot: Mapped[str] = mapped_column(Text)  # JSON: resourceVersion, colour, replicas, image...
    preview: Mapped[str] = mapped_column(Text)
    requester_id: Mapped[str] = mapped_column(String(32))
    requester_email: Mapped[str | None] = mapped_column(String(255))
    team_id: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)
    approvals: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {user, email, at}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(32))
    claim_token: Mapped[str | None] = mapped_column(String(64))
    executed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[str | None] = mapped_column(Text)
    break_glass_reason: Mapped[str | None] = mapped_column(Text)
