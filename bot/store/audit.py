"""The audit log: append-only and hash-chained.

Each entry's hash covers its content and the previous entry's hash, and the
newest hash is kept in ``audit_head``. Editing or deleting any row therefore
breaks the chain, which :func:`AuditLog.verify` reports. Appends lock the head
row, so replicas on one PostgreSQL append in a single, gap-free order.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.redaction import redact
from bot.store.models import AuditEntry, AuditHead

GENESIS = "0" * 64
MAX_FIELD = 4000


@dataclass(frozen=True)
class AuditRecord:
    actor: str
    action: str
    outcome: str  # ok | user_error | refused | failed | requested | approved | ...
    arguments: str = ""
    detail: str = ""
    team_id: str | None = None
    channel_id: str | None = None
    risk: str | None = None


def _hash(prev_hash: str, at: datetime, record: AuditRecord | AuditEntry) -> str:
    payload = json.dumps(
        {
            "prev": prev_hash,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": record.actor,
            "team": record.team_id,
            "channel": record.channel_id,
            "action": record.action,
            "arguments": record.arguments,
            "outcome": record.outcome,
            "detail": record.detail,
            "risk": record.risk,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _clip(text: str) -> str:
    text = redact(text or "")
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        # SQLite ignores FOR UPDATE; in one process a lock gives the same order.
        self._local_lock = threading.Lock()

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._sessions

    def append(self, record: AuditRecord) -> AuditEntry:
        record = AuditRecord(
            actor=record.actor[:64],
            action=record.action[:64],
            outcome=record.outcome[:16],
            arguments=_clip(record.arguments),
            detail=_clip(record.detail),
            team_id=record.team_id,
            channel_id=record.channel_id,
            risk=record.risk,
        )
        with self._local_lock, self._sessions.begin() as session:
            head = session.execute(
                select(AuditHead).where(AuditHead.id == 1).with_for_update()
            ).scalar_one()
            # Truncated to microseconds so the stored value hashes the same when read back.
            at = datetime.now(UTC)
            entry = AuditEntry(
                at=at,
                actor=record.actor,
                team_id=record.team_id,
                channel_id=record.channel_id,
                action=record.action,
                arguments=record.arguments,
                outcome=record.outcome,
                detail=record.detail,
                risk=record.risk,
                prev_hash=head.last_hash,
                entry_hash=_hash(head.last_hash, at, record),
            )
            session.add(entry)
            session.flush()
            head.last_id = entry.id
            head.last_hash = entry.entry_hash
            return entry

    def recent(self, limit: int) -> list[AuditEntry]:
        with self._sessions() as session:
            rows = session.execute(
                select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            ).scalars()
            return list(rows)

    def verify(self) -> list[str]:
        """Problems found in the chain; empty means intact."""
        problems: list[str] = []
        prev = GENESIS
        last_id = 0
        with self._sessions() as session:
            for entry in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
                at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
                if entry.prev_hash != prev:
                    problems.append(f"entry {entry.id}: previous entry missing or changed")
                if _hash(entry.prev_hash, at, entry) != entry.entry_hash:
                    problems.append(f"entry {entry.id}: content was edited")
                prev = entry.entry_hash
                last_id = entry.id
            head = session.get(AuditHead, 1)
            if head is not None and (head.last_hash != prev or head.last_id != last_id):
                problems.append(f"newest entries missing: head says {head.last_id}, table ends at {last_id}")
        return problems
