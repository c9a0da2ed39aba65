"""Configuration backups kept in the database (Secrets already redacted by the caller)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.store.models import ConfigBackup


class BackupStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def save(self, actor: str, namespace: str, content: str) -> ConfigBackup:
        backup = ConfigBackup(
            id=uuid.uuid4().hex[:12],
            created_at=datetime.now(UTC),
            actor=actor,
            namespace=namespace,
            sha256=hashlib.sha256(content.encode()).hexdigest(),
            content=content,
        )
        with self._sessions.begin() as session:
            session.add(backup)
        return backup

    def get(self, backup_id: str) -> ConfigBackup | None:
        with self._sessions() as session:
            return session.get(ConfigBackup, backup_id)

    def latest(self, namespace: str) -> ConfigBackup | None:
        with self._sessions() as session:
            return session.execute(
                select(ConfigBackup).where(ConfigBackup.namespace == namespace)
                .order_by(ConfigBackup.created_at.desc()).limit(1)
            ).scalar_one_or_none()
