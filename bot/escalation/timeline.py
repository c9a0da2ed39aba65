"""The incident timeline as Markdown: the start of a postmortem.

Merges, in time order: the alerts of the escalation's alert group (the alert
tables, read defensively: they may not exist in this deployment), the
escalation's own events (pages, late pages, failed pages, acknowledgements,
snoozes, resolution), and the audit log of the channel during the incident
(procedures run, approvals and their decisions). People are Slack user IDs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from bot.ports import AlertStatus
from bot.redaction import redact
from bot.store.models import AuditEntry, Escalation, EscalationEvent
from bot.timeutil import assume_utc
from bot.validators import format_duration

log = logging.getLogger(__name__)
# Commands run shortly before the escalation started belong to the incident too.
LEAD_IN = timedelta(minutes=30)
MAX_AUDIT_ROWS = 500


@dataclass(frozen=True)
class Entry:
    at: datetime
    who: str
    what: str
    source: str  # alert | escalation | audit


def _utc(at: datetime | None) -> datetime:
    return datetime.fromtimestamp(0, UTC) if at is None else assume_utc(at)


def _cell(value: str) -> str:
    return redact(value).replace("|", "\\|").replace("\n", " ")[:300]


def escalation_entries(session: Session, escalation_id: str) -> list[Entry]:
    events = session.execute(
        select(EscalationEvent).where(EscalationEvent.escalation_id == escalation_id).order_by(EscalationEvent.id)
    ).scalars()
    entries = []
    for event in events:
        what = {
            "started": "Escalation started",
            "paged": "Paged",
            "page_failed": "Page failed",
            "acknowledged": "Acknowledged",
            "snoozed": "Snoozed",
            "resolved": "Resolved",
            "escalated_now": "Escalated now",
            "new_alerts": "New alerts",
        }.get(event.kind, event.kind)
        detail = f"{what}: {event.detail}" if event.detail else what
        if event.late_seconds:
            detail += f" (late by {format_duration(event.late_seconds)})"
        entries.append(Entry(_utc(event.at), event.actor or "-", detail, "escalation"))
    return entries


def alert_entries(session: Session, group_id: int | None) -> list[Entry]:
    """The group's alert rows, if the alert tables exist here; nothing otherwise."""
    if group_id is None:
        return []
    try:
        with session.begin_nested():
            group = session.execute(
                text("SELECT alertnames, severity, opened_at, resolved_at FROM alert_groups WHERE id = :id"),
                {"id": group_id},
            ).first()
            alerts = session.execute(
                text("SELECT alertname, severity, status, starts_at, ends_at, labels FROM alerts "
                     "WHERE group_id = :id ORDER BY starts_at LIMIT 200"),
                {"id": group_id},
            ).all()
    except Exception as exc:  # noqa: BLE001 - no alert tables (or another shape): the timeline goes on
        log.info("timeline: alert tables not readable (%s)", type(exc).__name__)
        return []
    entries: list[Entry] = []
    if group is not None:
        entries.append(Entry(_utc(group[2]), "alertmanager", f"Alert group opened: {group[0]} ({group[1]})", "alert"))
        if group[3] is not None:
            entries.append(Entry(_utc(group[3]), "alertmanager", f"Alert group resolved: {group[0]}", "alert"))
    for name, severity, status, starts_at, ends_at, labels in alerts:
        try:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(labels or "{}").items())
                              if k not in ("alertname", "severity"))[:200]
        except (TypeError, ValueError):
            shown = ""
        entries.append(Entry(_utc(starts_at), "alertmanager", f"Alert firing: {name} ({severity}) {shown}".strip(), "alert"))
        if ends_at is not None and status == AlertStatus.RESOLVED:
            entries.append(Entry(_utc(ends_at), "alertmanager", f"Alert resolved: {name} {shown}".strip(), "alert"))
    return entries


def audit_entries(session: Session, channel_id: str, start: datetime, end: datetime) -> list[Entry]:
    rows = session.execute(
        select(AuditEntry)
        .where(AuditEntry.channel_id == channel_id, AuditEntry.at >= start - LEAD_IN, AuditEntry.at <= end)
        .order_by(AuditEntry.id)
        .limit(MAX_AUDIT_ROWS)
    ).scalars()
    entries = []
    for row in rows:
        arguments = row.arguments if row.arguments not in ("", "{}") else ""
        what = f"`/aia {row.action}` {arguments} → {row.outcome}".replace("  ", " ")
        if row.detail and row.outcome not in ("ok",):
            what += f": {row.detail[:160]}"
        entries.append(Entry(_utc(row.at), row.actor, what, "audit"))
    return entries


def timeline_markdown(sessions: sessionmaker[Session], escalation_id: str, now: datetime) -> tuple[str, int]:
    """(Markdown, number of entries)."""
    with sessions() as session:
        row = session.get(Escalation, escalation_id)
        if row is None:
            raise KeyError(escalation_id)
        start = _utc(row.created_at)
        end = _utc(row.resolved_at) if row.resolved_at else now
        entries = alert_entries(session, row.alert_group_id)
        entries += escalation_entries(session, row.id)
        entries += audit_entries(session, row.channel_id, start, end)
    entries.sort(key=lambda e: e.at)
    lines = [
        f"# Incident timeline · {row.id}",
        "",
        f"- **What:** {_cell(row.title)}",
        f"- **Severity:** {row.severity or '-'} · **Source:** {row.source} · **Channel:** {row.channel_id}",
        f"- **Started:** {start:%Y-%m-%d %H:%M:%S} UTC by {row.created_by}",
        f"- **Status:** {row.status}"
        + (f", acknowledged by {row.acknowledged_by} at {_utc(row.acknowledged_at):%H:%M:%S}" if row.acknowledged_by else "")
        + (f", resolved by {row.resolved_by} at {_utc(row.resolved_at):%H:%M:%S}" if row.resolved_by else ""),
        f"- **Duration so far:** {format_duration((end - start).total_seconds())}",
        "",
        "| Time (UTC) | Who | What | From |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {e.at:%Y-%m-%d %H:%M:%S} | {_cell(e.who)} | {_cell(e.what)} | {e.source} |" for e in entries]
    lines += ["", "_Generated by the AIA runbook bot; edit freely for the postmortem._", ""]
    return "\n".join(lines), len(entries)
