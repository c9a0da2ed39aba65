"""Configuration backups kept in the database.

Stored format (``config_backups.content``), what `/aia dr plan|restore` reads back:

- One YAML stream (``yaml.safe_dump_all``) of whole Kubernetes objects, one document
  each, grouped by kind in the order they are re-applied: ServiceAccount, Role,
  RoleBinding, ConfigMap, SecretStore, ExternalSecret, Deployment, Service,
  HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy, Ingress
  (:data:`KIND_ORDER`). :func:`load_backup` returns ``{kind: [object, ...]}``.
- Each object has ``apiVersion``, ``kind``, ``metadata`` (without uid,
  resourceVersion, managedFields, creationTimestamp, generation and the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation) and its spec-like
  fields; never ``status``. Services lose their cluster-assigned ``clusterIP(s)``.
- Never a Secret: Secrets are not even read; they come back from Secret Manager
  through the ExternalSecret (and its SecretStore), which are in the backup.
- Redacted (bot.redaction): literal env values in pod templates whose name or content
  looks secret, config map values likewise, annotation values and command lines that
  contain a credential. A redacted value reads ``«redacted»``: a restore must not apply
  it blindly (dr plan shows which).
- ``sha256`` is the SHA-256 of ``content`` as stored (UTF-8): :meth:`BackupStore.verify`
  recomputes it, so a backup edited in the database is refused for a restore.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.store.models import ConfigBackup

KIND_ORDER = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "SecretStore", "ExternalSecret", "Deployment",
              "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress")


def dump_backup(objects: dict[str, list[dict[str, Any]]]) -> str:
    """The stored YAML: whole objects, grouped by kind in re-apply order (unknown kinds last)."""
    kinds = [k for k in KIND_ORDER if k in objects] + sorted(k for k in objects if k not in KIND_ORDER)
    if "Secret" in kinds:
        raise ValueError("Secrets are never stored in a configuration backup")
    docs = [obj for kind in kinds for obj in objects[kind]]
    return yaml.safe_dump_all(docs, sort_keys=False, width=200, allow_unicode=True)


def load_backup(content: str) -> dict[str, list[dict[str, Any]]]:
    """``{kind: [object, ...]}`` from stored content, in the stored order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(content):
        if isinstance(doc, dict) and doc.get("kind"):
            grouped.setdefault(str(doc["kind"]), []).append(doc)
    return grouped


def checksum(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


class BackupStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def save(self, actor: str, namespace: str, content: str) -> ConfigBackup:
        backup = ConfigBackup(
            id=uuid.uuid4().hex[:12],
            created_at=datetime.now(UTC),
            actor=actor,
            namespace=namespace,
            sha256=checksum(content),
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

    def verify(self, backup: ConfigBackup) -> bool:
        """The stored content still matches the checksum taken when it was made."""
        return checksum(backup.content) == backup.sha256
