"""Alert groups and alerts in the database: ingesting a webhook, and reading groups back.

Identity: an alert is (groupKey, fingerprint, startsAt). A re-fired alert has a new
startsAt, so it is a new alert; the same identity seen again (Alertmanager's HA pair,
retries, the periodic re-send of a whole group) changes nothing, and a stale "firing"
copy of an alert already resolved does not bring it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.alerts.payload import AlertIn, WebhookPayload, severity_rank
from bot.store.models import AlertGroup, AlertRecord

# Alerts shown per group in views (the parent message shows fewer; the thread's file, all).
MAX_VIEW_ALERTS = 500


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AlertView:
    alertname: str
    status: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    fingerprint: str


@dataclass(frozen=True)
class GroupView:
    id: int
    status: str
    severity: str
    alertnames: list[str]
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    external_url: str
    firing_count: int
    resolved_count: int
    truncated_alerts: int
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    channel_id: str | None
    thread_ts: str | None
    permalink: str | None
    previous_permalink: str | None
    alerts: list[AlertView] = field(default_factory=list)

    @property
    def title(self) -> str:
        return ", ".join(self.alertnames) or "alert"

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass
class IngestResult:
    group_id: int | None
    new_alerts: int = 0
    resolved_alerts: int = 0
    opened: bool = False
    resolved: bool = False
    thread_known: bool = False  # the parent is posted: Changed/Resolved events make sense
    severity_rank: int = 5
    stale: int = 0  # firing copies of alerts already resolved

    @property
    def changed(self) -> bool:
        return bool(self.new_alerts or self.resolved_alerts)


@dataclass(frozen=True)
class _Known:
    id: int
    status: str


def _alert_row(alert: AlertIn, group_id: int, key: str, now: datetime) -> dict[str, Any]:
    return dict(
        group_id=group_id, key_hash=key, fingerprint=alert.fingerprint, starts_at=alert.starts_at,
        ends_at=alert.ends_at, status=alert.status, alertname=alert.alertname[:255],
        severity=alert.severity, labels=json.dumps(alert.labels, sort_keys=True),
        annotations=json.dumps(alert.annotations, sort_keys=True),
        generator_url=alert.generator_url[:4000], received_at=now,
    )


def _identity(fingerprint: str, starts_at: datetime | None) -> tuple[str, str]:
    stamp = as_utc(starts_at)
    return fingerprint, stamp.isoformat(timespec="microseconds") if stamp else ""


class AlertStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # -- ingest ------------------------------------------------------------------
    def ingest(self, payload: WebhookPayload, after: Any = None) -> IngestResult:
        """Persist a payload in one transaction; ``after(session, result)`` runs inside it.

        Two replicas creating the same group at once collide on a unique index; the loser
        simply runs again and finds the winner's rows.
        """
        for attempt in range(3):
            try:
                with self.sessions() as session, session.begin():
                    result = self._ingest(session, payload)
                    if after is not None and result.group_id is not None:
                        after(session, result)
                    return result
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ingest(self, session: Session, payload: WebhookPayload) -> IngestResult:
        key = payload.key_hash
        now = datetime.now(UTC)
        # Lock the open episode first: a concurrent copy of this payload (the HA peer, a retry)
        # then waits here and afterwards sees the alerts as existing, instead of colliding.
        group = session.scalars(
            select(AlertGroup).where(AlertGroup.key_hash == key, AlertGroup.status == "firing").with_for_update()
        ).first()
        # The same alert twice in one payload counts once (last copy wins).
        incoming = {_identity(a.fingerprint, a.starts_at): a for a in payload.alerts}
        fingerprints = sorted({a.fingerprint for a in incoming.values()})
        # Plain rows, not ORM objects: this runs for every webhook of a storm.
        existing: dict[tuple[str, str], _Known] = {}
        for start in range(0, len(fingerprints), 500):
            for row in session.connection().execute(
                select(AlertRecord.id, AlertRecord.fingerprint, AlertRecord.starts_at, AlertRecord.status).where(
                    AlertRecord.key_hash == key, AlertRecord.fingerprint.in_(fingerprints[start:start + 500])
                )
            ):
                existing[_identity(row.fingerprint, row.starts_at)] = _Known(row.id, row.status)

        new = [a for ident, a in incoming.items() if ident not in existing]
        resolving = [
            (existing[ident], a) for ident, a in incoming.items()
            if ident in existing and a.status == "resolved" and existing[ident].status == "firing"
        ]
        stale = sum(1 for ident, a in incoming.items()
                    if ident in existing and a.status == "firing" and existing[ident].status == "resolved")
        if not new and not resolving:
            return IngestResult(group.id if group else None, stale=stale,
                                thread_known=bool(group and group.opened_published))
        if group is None:
            if not new:
                # Resolutions of alerts of an episode that already closed: nothing to reopen.
                return IngestResult(None, stale=stale)
            group = self._open_group(session, payload, key, now, min(a.starts_at for a in new))
        result = IngestResult(group.id, new_alerts=len(new), resolved_alerts=len(resolving), stale=stale,
                              opened=group.firing_count == 0 and group.resolved_count == 0)
        if new:
            # Core-level executemany (one multi-row INSERT): the ORM's bulk path costs more than the database.
            session.connection().execute(insert(AlertRecord), [_alert_row(a, group.id, key, now) for a in new])
        if resolving:
            session.connection().execute(
                update(AlertRecord).where(AlertRecord.id == bindparam("row_id")).values(
                    status="resolved", ends_at=bindparam("ended")),
                [{"row_id": known.id, "ended": alert.ends_at or now} for known, alert in resolving],
            )
        self._refresh_group(session, group, payload, now, new, len(resolving))
        result.resolved = group.status == "resolved"
        result.thread_known = group.opened_published
        result.severity_rank = group.severity_rank
        return result

    @staticmethod
    def _open_group(session: Session, payload: WebhookPayload, key: str, now: datetime,
                    since: datetime) -> AlertGroup:
        # The episode began when its first alert started firing, not when we heard of it.
        previous = session.scalars(
            select(AlertGroup).where(AlertGroup.key_hash == key).order_by(AlertGroup.id.desc()).limit(1)
        ).first()
        group = AlertGroup(
            key_hash=key, group_key=payload.group_key, receiver=payload.receiver, status="firing",
            severity="none", severity_rank=5, alertnames="", group_labels="{}", common_labels="{}",
            common_annotations="{}", external_url=payload.external_url, truncated_alerts=0,
            firing_count=0, resolved_count=0, opened_at=min(since, now), updated_at=now,
            previous_id=previous.id if previous else None, opened_published=False,
        )
        session.add(group)
        session.flush()
        return group

    @staticmethod
    def _refresh_group(session: Session, group: AlertGroup, payload: WebhookPayload, now: datetime,
                       new: list[AlertIn], resolving: int) -> None:
        """Counts, names and severity updated from the change alone: no query per webhook
        beyond the ones that find and write the alerts (this is the storm's hot path)."""
        new_firing = sum(1 for a in new if a.status == "firing")
        group.firing_count = (group.firing_count or 0) + new_firing - resolving
        group.resolved_count = (group.resolved_count or 0) + (len(new) - new_firing) + resolving
        names = {n for n in (group.alertnames or "").split(",") if n} | {a.alertname for a in new}
        group.alertnames = ",".join(sorted(names))[:4000]
        worst = min([group.severity or "none", *(a.severity for a in new)], key=severity_rank)
        group.severity, group.severity_rank = worst, severity_rank(worst)
        group.group_labels = json.dumps(payload.group_labels, sort_keys=True)
        group.common_labels = json.dumps(payload.common_labels, sort_keys=True)
        group.common_annotations = json.dumps(payload.common_annotations, sort_keys=True)
        group.external_url = payload.external_url
        group.truncated_alerts = payload.truncated_alerts
        group.updated_at = now
        if group.firing_count <= 0:
            session.flush()
            ends = session.scalar(select(func.max(AlertRecord.ends_at)).where(AlertRecord.group_id == group.id))
            group.firing_count = 0
            group.status = "resolved"
            group.resolved_at = as_utc(ends) or now

    # -- reading -------------------------------------------------------------------
    def view(self, session: Session, group_id: int, max_alerts: int = MAX_VIEW_ALERTS) -> GroupView | None:
        group = session.get(AlertGroup, group_id)
        if group is None:
            return None
        records = session.scalars(
            select(AlertRecord).where(AlertRecord.group_id == group_id)
            .order_by(AlertRecord.status, AlertRecord.starts_at, AlertRecord.id).limit(max_alerts)
        ).all()
        previous = session.get(AlertGroup, group.previous_id) if group.previous_id else None
        return GroupView(
            id=group.id, status=group.status, severity=group.severity,
            alertnames=[n for n in group.alertnames.split(",") if n],
            group_labels=json.loads(group.group_labels), common_labels=json.loads(group.common_labels),
            common_annotations=json.loads(group.common_annotations), external_url=group.external_url,
            firing_count=group.firing_count, resolved_count=group.resolved_count,
            truncated_alerts=group.truncated_alerts, opened_at=as_utc(group.opened_at) or datetime.now(UTC),
            updated_at=as_utc(group.updated_at) or datetime.now(UTC), resolved_at=as_utc(group.resolved_at),
            channel_id=group.channel_id, thread_ts=group.thread_ts, permalink=group.permalink,
            previous_permalink=previous.permalink if previous else None,
            alerts=[
                AlertView(
                    alertname=r.alertname, status=r.status, severity=r.severity, labels=json.loads(r.labels),
                    annotations=json.loads(r.annotations), starts_at=as_utc(r.starts_at) or datetime.now(UTC),
                    ends_at=as_utc(r.ends_at), generator_url=r.generator_url, fingerprint=r.fingerprint,
                )
                for r in records
            ],
        )

    def open_groups(self, limit: int = 200) -> list[GroupView]:
        with self.sessions() as session:
            ids = session.scalars(
                select(AlertGroup.id).where(AlertGroup.status == "firing")
                .order_by(AlertGroup.severity_rank, AlertGroup.opened_at).limit(limit)
            ).all()
            views = [self.view(session, gid, max_alerts=20) for gid in ids]
            return [v for v in views if v is not None]

    def count_alerts(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(AlertRecord)) or 0)
