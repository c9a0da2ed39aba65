"""Alert groups and alerts in the database: ingesting a webhook, and reading groups back.

Identity: an alert is (groupKey, fingerprint, startsAt). A re-fired alert has a new
startsAt, so it is a new alert; the same identity seen again (Alertmanager's HA pair,
retries, the periodic re-send of a whole group) changes nothing, and a stale "firing"
copy of an alert already resolved does not bring it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.alerts.payload import AlertIn, AlertStatus, WebhookPayload, severity_rank
from bot.store.models import AlertGroup, AlertRecord
from bot.timeutil import assume_utc

# Alerts shown per group in views (the parent message shows fewer; the thread's file, all).
MAX_VIEW_ALERTS = 500


@dataclass(frozen=True)
class AlertView:
    alertname: str
    status: AlertStatus
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
    status: AlertStatus
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
        return self.status == AlertStatus.FIRING


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


@dataclass
class _Known:
    status: str
    row: dict[str, Any] | None = None  # its INSERT is still pending in this batch


class _Batch:
    """What one transaction knows about the groups and alerts its payloads touch.

    The open episodes (locked) and the alerts already stored are read once for all the
    payloads, and new alerts are written in one INSERT at the end: a storm's fold costs a
    few statements per batch instead of five per webhook. Payloads are still applied one
    after the other, each seeing what the ones before it changed.
    """

    def __init__(self, session: Session, payloads: list[WebhookPayload]) -> None:
        self.session = session
        self.now = datetime.now(UTC)
        keys = sorted({p.key_hash for p in payloads})
        # Lock the open episodes first: a concurrent copy of a payload (the HA peer, a retry)
        # then waits here and afterwards sees the alerts as existing, instead of colliding.
        # In id order, so that two transactions locking several groups cannot deadlock.
        self.open: dict[str, AlertGroup | None] = dict.fromkeys(keys)
        dialect = session.get_bind().dialect.name
        for chunk in _chunks(keys, 500):
            for group in session.scalars(
                select(AlertGroup).where(AlertGroup.key_hash.in_(chunk), AlertGroup.status == AlertStatus.FIRING)
                .order_by(AlertGroup.id).with_for_update()
            ):
                self.open[group.key_hash] = group
        # A new episode links the one before it: the newest, which is the open one if any.
        self.latest: dict[str, int] = {key: group.id for key, group in self.open.items() if group is not None}
        closed = [key for key, group in self.open.items() if group is None]
        for chunk in _chunks(closed, 500):
            for key, latest in session.execute(
                select(AlertGroup.key_hash, func.max(AlertGroup.id))
                .where(AlertGroup.key_hash.in_(chunk)).group_by(AlertGroup.key_hash)
            ):
                self.latest[key] = latest
        self.dialect = dialect
        # The same alert twice in one payload counts once (last copy wins).
        self.incoming = [{_identity(a.fingerprint, a.starts_at): a for a in p.alerts} for p in payloads]
        pairs = sorted({(p.key_hash, a.fingerprint) for p, alerts in zip(payloads, self.incoming, strict=True)
                        for a in alerts.values()})
        # Plain rows, not ORM objects, and (key, fingerprint) pairs rather than two IN lists:
        # PostgreSQL would probe the index for every combination of the two.
        self.known: dict[str, dict[tuple[str, datetime], _Known]] = {key: {} for key in keys}
        connection = session.connection()
        for chunk in _chunks(pairs, 2000 if dialect == "postgresql" else 400):
            if dialect == "postgresql":
                with _driver(connection).cursor() as cursor:
                    # Binary parameters: psycopg escapes text arrays in Python, element by element.
                    rows = cursor.execute(_KNOWN_PAIRS_PG, {"keys": [k for k, _ in chunk],
                                                             "fps": [f for _, f in chunk]}).fetchall()
            else:
                rows = connection.execute(
                    select(AlertRecord.key_hash, AlertRecord.fingerprint, AlertRecord.starts_at, AlertRecord.status)
                    .where(tuple_(AlertRecord.key_hash, AlertRecord.fingerprint).in_(chunk))
                ).all()
            for key, fingerprint, starts_at, status in rows:
                self.known[key][_identity(fingerprint, starts_at)] = _Known(status)
        self._inserts: list[_Known] = []
        self._resolutions: list[dict[str, Any]] = []

    def add(self, known: dict[tuple[str, datetime], _Known], ident: tuple[str, datetime], row: dict[str, Any]) -> None:
        entry = known[ident] = _Known(row["status"], row)
        self._inserts.append(entry)

    def resolve(self, entry: _Known, key: str, alert: AlertIn, ended: datetime) -> None:
        entry.status = AlertStatus.RESOLVED
        if entry.row is not None:  # not written yet: write it resolved
            entry.row.update(status=AlertStatus.RESOLVED, ends_at=ended)
        else:
            self._resolutions.append({"b_key": key, "b_fingerprint": alert.fingerprint,
                                      "b_starts": alert.starts_at, "b_ended": ended})

    def write(self) -> None:
        connection = self.session.connection()
        if self._inserts:
            rows = [entry.row for entry in self._inserts if entry.row is not None]
            if self.dialect == "postgresql":
                # COPY: a storm writes 5,000 rows, and executemany cost more in the driver per
                # row than the database did (so did arrays of text, escaped in Python).
                with _driver(connection).cursor() as cursor, cursor.copy(_COPY_ALERTS_PG) as copy:
                    for row in rows:
                        copy.write_row([row[name] for name in _ALERT_COLUMNS])
            else:
                # Core-level executemany: the ORM's bulk path costs more than the database.
                connection.execute(insert(AlertRecord), rows)
            for entry in self._inserts:
                entry.row = None
            self._inserts = []
        if self._resolutions:
            # By identity (the unique index): rows written earlier in this batch have no id here.
            connection.execute(
                update(AlertRecord).where(
                    AlertRecord.key_hash == bindparam("b_key"), AlertRecord.fingerprint == bindparam("b_fingerprint"),
                    AlertRecord.starts_at == bindparam("b_starts"),
                ).values(status=AlertStatus.RESOLVED, ends_at=bindparam("b_ended")),
                self._resolutions,
            )
            self._resolutions = []


# Two arrays as parameters, whatever their length: one statement text, which psycopg
# prepares once. Expanded IN lists make a new text (parsed again) for every length.
_KNOWN_PAIRS_PG = (
    "SELECT a.key_hash, a.fingerprint, a.starts_at, a.status FROM alerts AS a"
    " JOIN unnest(%(keys)b::text[], %(fps)b::text[]) AS p(key_hash, fingerprint)"
    " ON a.key_hash = p.key_hash AND a.fingerprint = p.fingerprint"
)


_ALERT_COLUMNS = ("group_id", "key_hash", "fingerprint", "starts_at", "ends_at", "status", "alertname", "severity",
                  "labels", "annotations", "generator_url", "received_at")
_COPY_ALERTS_PG = (
    "COPY alerts (group_id, key_hash, fingerprint, starts_at, ends_at, status, alertname, severity, labels,"
    " annotations, generator_url, received_at) FROM STDIN"
)


def _driver(connection: Connection) -> Any:
    """The psycopg connection under SQLAlchemy's, in the same transaction."""
    return connection.connection.driver_connection


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _alert_row(alert: AlertIn, group_id: int, key: str, now: datetime) -> dict[str, Any]:
    return dict(
        group_id=group_id, key_hash=key, fingerprint=alert.fingerprint, starts_at=alert.starts_at,
        ends_at=alert.ends_at, status=alert.status, alertname=alert.alertname[:255],
        severity=alert.severity, labels=json.dumps(alert.labels, sort_keys=True),
        annotations=json.dumps(alert.annotations, sort_keys=True),
        generator_url=alert.generator_url[:4000], received_at=now,
    )


def _identity(fingerprint: str, starts_at: datetime) -> tuple[str, datetime]:
    # Aware datetimes compare (and hash) by instant, whatever zone object they carry.
    return fingerprint, assume_utc(starts_at)


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
                    result = self.apply(session, [payload])[0]
                    if after is not None and result.group_id is not None:
                        after(session, result)
                    return result
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def apply(self, session: Session, payloads: list[WebhookPayload]) -> list[IngestResult]:
        """Apply payloads in order, inside the caller's transaction (one, or the inbox
        folder's batch); what each changed."""
        if not payloads:
            return []
        batch = _Batch(session, payloads)
        results = [self._apply(batch, payload, incoming)
                   for payload, incoming in zip(payloads, batch.incoming, strict=True)]
        batch.write()
        return results

    def _apply(self, batch: _Batch, payload: WebhookPayload, incoming: dict[tuple[str, datetime], AlertIn]) -> IngestResult:
        session, now, key = batch.session, batch.now, payload.key_hash
        group = batch.open[key]
        known = batch.known[key]
        new = [(ident, a) for ident, a in incoming.items() if ident not in known]
        resolving = [
            (known[ident], a) for ident, a in incoming.items()
            if ident in known and a.status == AlertStatus.RESOLVED and known[ident].status == AlertStatus.FIRING
        ]
        stale = sum(1 for ident, a in incoming.items()
                    if ident in known and a.status == AlertStatus.FIRING and known[ident].status == AlertStatus.RESOLVED)
        if not new and not resolving:
            return IngestResult(group.id if group else None, stale=stale,
                                thread_known=bool(group and group.opened_published))
        if group is None:
            if not new:
                # Resolutions of alerts of an episode that already closed: nothing to reopen.
                return IngestResult(None, stale=stale)
            group = batch.open[key] = self._open_group(session, payload, key, now, min(a.starts_at for _, a in new),
                                                       batch.latest.get(key))
            batch.latest[key] = group.id
        result = IngestResult(group.id, new_alerts=len(new), resolved_alerts=len(resolving), stale=stale,
                              opened=group.firing_count == 0 and group.resolved_count == 0)
        for ident, alert in new:
            batch.add(known, ident, _alert_row(alert, group.id, key, now))
        for entry, alert in resolving:
            batch.resolve(entry, key, alert, alert.ends_at or now)
        self._refresh_group(batch, group, payload, [a for _, a in new], len(resolving))
        if group.status == AlertStatus.RESOLVED:
            batch.open[key] = None
        result.resolved = group.status == AlertStatus.RESOLVED
        result.thread_known = group.opened_published
        result.severity_rank = group.severity_rank
        return result

    @staticmethod
    def _open_group(session: Session, payload: WebhookPayload, key: str, now: datetime,
                    since: datetime, previous_id: int | None) -> AlertGroup:
        # The episode began when its first alert started firing, not when we heard of it.
        group = AlertGroup(
            key_hash=key, group_key=payload.group_key, receiver=payload.receiver, status=AlertStatus.FIRING,
            severity="none", severity_rank=5, alertnames="", group_labels="{}", common_labels="{}",
            common_annotations="{}", external_url=payload.external_url, truncated_alerts=0,
            firing_count=0, resolved_count=0, opened_at=min(since, now), updated_at=now,
            previous_id=previous_id, opened_published=False,
        )
        session.add(group)
        session.flush()
        return group

    @staticmethod
    def _refresh_group(batch: _Batch, group: AlertGroup, payload: WebhookPayload, new: list[AlertIn],
                       resolving: int) -> None:
        """Counts, names and severity updated from the change alone: no query per webhook
        beyond the ones that find and write the alerts (this is the storm's hot path)."""
        session, now = batch.session, batch.now
        new_firing = sum(1 for a in new if a.status == AlertStatus.FIRING)
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
            batch.write()
            session.flush()
            ends = session.scalar(select(func.max(AlertRecord.ends_at)).where(AlertRecord.group_id == group.id))
            group.firing_count = 0
            group.status = AlertStatus.RESOLVED
            group.resolved_at = assume_utc(ends) or now

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
            id=group.id, status=AlertStatus(group.status), severity=group.severity,
            alertnames=[n for n in group.alertnames.split(",") if n],
            group_labels=json.loads(group.group_labels), common_labels=json.loads(group.common_labels),
            common_annotations=json.loads(group.common_annotations), external_url=group.external_url,
            firing_count=group.firing_count, resolved_count=group.resolved_count,
            truncated_alerts=group.truncated_alerts, opened_at=assume_utc(group.opened_at) or datetime.now(UTC),
            updated_at=assume_utc(group.updated_at) or datetime.now(UTC), resolved_at=assume_utc(group.resolved_at),
            channel_id=group.channel_id, thread_ts=group.thread_ts, permalink=group.permalink,
            previous_permalink=previous.permalink if previous else None,
            alerts=[
                AlertView(
                    alertname=r.alertname, status=AlertStatus(r.status), severity=r.severity, labels=json.loads(r.labels),
                    annotations=json.loads(r.annotations), starts_at=assume_utc(r.starts_at) or datetime.now(UTC),
                    ends_at=assume_utc(r.ends_at), generator_url=r.generator_url, fingerprint=r.fingerprint,
                )
                for r in records
            ],
        )

    def open_groups(self, limit: int = 200) -> list[GroupView]:
        with self.sessions() as session:
            ids = session.scalars(
                select(AlertGroup.id).where(AlertGroup.status == AlertStatus.FIRING)
                .order_by(AlertGroup.severity_rank, AlertGroup.opened_at).limit(limit)
            ).all()
            views = [self.view(session, gid, max_alerts=20) for gid in ids]
            return [v for v in views if v is not None]
