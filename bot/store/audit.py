"""The audit log: append-only and chained with an HMAC.

Each entry's hash is an HMAC-SHA256, keyed from AIA_AUDIT_KEY, over its content and
the previous entry's hash; the newest hash is kept in ``audit_head``. Editing or
deleting any row breaks the chain, and without the key nobody (not even someone
who can write the database) can compute a chain that passes
:func:`AuditLog.verify`. Appends lock the head row, so replicas on one PostgreSQL
append in a single, gap-free order.

Schemes: every row records how its hash was made. ``hmac-sha256`` is the only one
written with a key. ``sha256`` rows are those written before the key existed
(migration 0007_audit_hmac) or by a process without a key (only tests and tools:
`aia-bot serve` refuses to start without one). Verify reports unkeyed rows; an
unkeyed row *after* a keyed one is a problem (a downgrade). :func:`AuditLog.rekey`
turns the older unkeyed rows into keyed ones once their plain chain checks out.

Arguments and details are redacted before they are stored (bot.redaction); a JSON
object of arguments also has the values of secret-looking keys masked, at any depth.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.redaction import MASK, looks_secret_key, redact
from bot.store.models import AuditEntry, AuditHead
from bot.timeutil import assume_utc

GENESIS = "0" * 64
MAX_FIELD = 4000
KEYED = "hmac-sha256"
UNKEYED = "sha256"


def derive_key(secret: str) -> bytes:
    """The HMAC key: derived from the setting, so the raw secret is used for nothing else."""
    return hmac.new(secret.encode(), b"aia-bot audit chain v1", hashlib.sha256).digest()


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


def _hash(prev_hash: str, at: datetime, record: AuditRecord | AuditEntry, key: bytes | None = None) -> str:
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
    if key is None:
        return hashlib.sha256(payload.encode()).hexdigest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _clip(text: str) -> str:
    text = redact(text or "")
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


def _mask_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if looks_secret_key(str(k)) and v not in (None, "") else _mask_secret_keys(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_secret_keys(v) for v in value]
    return value


def redact_arguments(arguments: str) -> str:
    """Arguments as stored: a JSON object has secret-looking keys' values masked
    (``{"pairs": {"DB_PASSWORD": "x"}}``), and the text is redacted either way."""
    try:
        parsed = json.loads(arguments) if arguments.lstrip().startswith(("{", "[")) else None
    except ValueError:
        parsed = None
    if parsed is not None:
        arguments = json.dumps(_mask_secret_keys(parsed), ensure_ascii=False)
    return _clip(arguments)


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keyed: int = 0
    unkeyed: int = 0


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], key: str | None = None) -> None:
        self._sessions = sessions
        self._key = derive_key(key) if key else None
        # SQLite ignores FOR UPDATE; in one process a lock gives the same order.
        self._local_lock = threading.Lock()

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._sessions

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def append(self, record: AuditRecord) -> AuditEntry:
        record = AuditRecord(
            actor=record.actor[:64],
            action=record.action[:64],
            outcome=record.outcome[:16],
            arguments=redact_arguments(record.arguments or ""),
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
                entry_hash=_hash(head.last_hash, at, record, self._key),
                scheme=KEYED if self._key is not None else UNKEYED,
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
        return self.verify_report().problems

    def verify_report(self) -> VerifyReport:
        report = VerifyReport()
        prev = GENESIS
        last_id = 0
        seen_keyed = False
        with self._sessions() as session:
            for entry in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
                at = assume_utc(entry.at)
                if entry.prev_hash != prev:
                    report.problems.append(f"entry {entry.id}: previous entry missing or changed")
                if entry.scheme == KEYED:
                    seen_keyed = True
                    report.keyed += 1
                    if self._key is not None and _hash(entry.prev_hash, at, entry, self._key) != entry.entry_hash:
                        report.problems.append(f"entry {entry.id}: content was edited (or written with another key)")
                else:
                    report.unkeyed += 1
                    if seen_keyed:
                        report.problems.append(f"entry {entry.id}: unkeyed entry after keyed ones (a downgrade)")
                    if _hash(entry.prev_hash, at, entry) != entry.entry_hash:
                        report.problems.append(f"entry {entry.id}: content was edited")
                prev = entry.entry_hash
                last_id = entry.id
            head = session.get(AuditHead, 1)
            if head is not None and (head.last_hash != prev or head.last_id != last_id):
                report.problems.append(f"newest entries missing: head says {head.last_id}, table ends at {last_id}")
        if self._key is None and report.keyed:
            report.notes.append(f"AIA_AUDIT_KEY is not set: the {report.keyed} keyed entries could not be checked "
                                "(only their order); set the key to verify them")
        if report.unkeyed:
            report.notes.append(f"{report.unkeyed} entries are unkeyed (plain SHA-256, written before AIA_AUDIT_KEY): "
                                "anyone with database access could have rewritten them; `aia-bot audit rekey` "
                                "keys them once their chain checks out")
        return report

    def rekey(self) -> int:
        """Re-chain every row with the key, after checking the whole chain as it is. Returns rows rewritten.

        Refuses (ValueError) without a key or when verify finds any problem: a broken chain
        must be investigated, never laundered into a keyed one.
        """
        if self._key is None:
            raise ValueError("AIA_AUDIT_KEY is not set")
        problems = self.verify()
        if problems:
            raise ValueError("the chain has problems; not re-keyed: " + "; ".join(problems[:5]))
        changed = 0
        with self._local_lock, self._sessions.begin() as session:
            head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
            prev = GENESIS
            for entry in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
                at = assume_utc(entry.at)
                new_hash = _hash(prev, at, entry, self._key)
                if entry.scheme != KEYED or entry.prev_hash != prev or entry.entry_hash != new_hash:
                    entry.prev_hash, entry.entry_hash, entry.scheme = prev, new_hash, KEYED
                    changed += 1
                    session.flush()
                prev = new_hash
            head.last_hash = prev
        return changed
