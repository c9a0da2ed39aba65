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
    # How entry_hash was made: "hmac-sha256" (keyed by AIA_AUDIT_KEY) or "sha256" (rows
    # written before the key existed; migration 0007_audit_hmac).
    scheme: Mapped[str] = mapped_column(String(16), default="hmac-sha256", server_default="sha256")


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


class ConfigBackup(Base):
    """A namespace configuration backup (`/aia config backup`), Secret values redacted."""

    __tablename__ = "config_backups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(32))
    namespace: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)


# --- Alert threads and outbox ---
import sqlalchemy as sa  # noqa: E402 - kept with its section so parallel edits do not collide


class AlertGroup(Base):
    """One episode of an Alertmanager group (groupKey): one Slack thread.

    At most one episode per groupKey is open; when every alert of it resolves the
    episode closes, and the next firing opens a new episode (and a new thread that
    links this one through ``previous_id``).
    """

    __tablename__ = "alert_groups"
    __table_args__ = (
        sa.Index(
            "uq_alert_groups_open_key", "key_hash", unique=True,
            postgresql_where=sa.text("status = 'firing'"), sqlite_where=sa.text("status = 'firing'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), index=True)
    group_key: Mapped[str] = mapped_column(Text)
    receiver: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    severity: Mapped[str] = mapped_column(String(32))
    severity_rank: Mapped[int] = mapped_column(Integer)
    alertnames: Mapped[str] = mapped_column(Text)  # comma-separated, sorted
    group_labels: Mapped[str] = mapped_column(Text)  # JSON
    common_labels: Mapped[str] = mapped_column(Text)  # JSON
    common_annotations: Mapped[str] = mapped_column(Text)  # JSON
    external_url: Mapped[str] = mapped_column(Text, default="")
    truncated_alerts: Mapped[int] = mapped_column(Integer, default=0)
    firing_count: Mapped[int] = mapped_column(Integer, default=0)
    resolved_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    previous_id: Mapped[int | None] = mapped_column(Integer)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(Text)
    # Set once, by whichever replica posted the parent: AlertGroupOpened is published once.
    opened_published: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class AlertRecord(Base):
    """One alert as Alertmanager identifies it: fingerprint + startsAt, within a groupKey."""

    __tablename__ = "alerts"
    __table_args__ = (sa.UniqueConstraint("key_hash", "fingerprint", "starts_at", name="uq_alerts_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(Integer, sa.ForeignKey("alert_groups.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    alertname: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(32))
    labels: Mapped[str] = mapped_column(Text)  # JSON
    annotations: Mapped[str] = mapped_column(Text)  # JSON
    generator_url: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertInboxEntry(Base):
    """A webhook body as received (validated), waiting to be folded into groups and alerts.

    The webhook answers once this row is committed: one INSERT, however many alerts the
    body holds. A background folder applies rows in id order and deletes them; a row it
    cannot apply keeps ``attempts`` and ``last_error`` for an operator.
    """

    __tablename__ = "alert_inbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the webhook's JSON, as Alertmanager sent it
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A Slack call waiting to be made (or a task that produces one), shared by all replicas.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease; ``coalesce_key`` is unique
    among pending rows, so a burst of changes to one message leaves one pending update.
    Scheduling times are epoch seconds (floats): no time-zone surprises on SQLite.
    """

    __tablename__ = "slack_outbox"
    __table_args__ = (
        sa.Index(
            "uq_slack_outbox_pending_key", "coalesce_key", unique=True,
            postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"),
        ),
        sa.Index("ix_slack_outbox_queue", "state", "priority", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # message | alert_group | alert_context | storm
    channel: Mapped[str] = mapped_column(String(80))
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    coalesce_key: Mapped[str | None] = mapped_column(String(120))
    priority: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    state: Mapped[str] = mapped_column(String(16))  # pending | sending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[float] = mapped_column(sa.Float)
    lease_until: Mapped[float | None] = mapped_column(sa.Float)
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[float] = mapped_column(sa.Float)
    sent_at: Mapped[float | None] = mapped_column(sa.Float)
    result_ts: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxChannel(Base):
    """Per-channel pacing shared by every replica: the next moment a chat.postMessage may go."""

    __tablename__ = "slack_outbox_channels"

    channel: Mapped[str] = mapped_column(String(80), primary_key=True)
    next_post_at: Mapped[float] = mapped_column(sa.Float, default=0.0)
    storm_ts: Mapped[str | None] = mapped_column(String(32))
    storm_started_at: Mapped[float | None] = mapped_column(sa.Float)
    storm_posted: Mapped[int] = mapped_column(Integer, default=0)


# --- Escalation ---
from sqlalchemy import Float as _EscFloat  # noqa: E402 - kept with its section so parallel edits do not collide
from sqlalchemy import Index as _EscIndex  # noqa: E402
from sqlalchemy import UniqueConstraint as _EscUnique  # noqa: E402


class Escalation(Base):
    """One escalation: the truth every replica's timers are checked against.

    ``version`` changes with every state change (step fired, ack, snooze...). A
    timer carries the version it was scheduled for and fires only through a
    compare-and-set on it, so a stale timer, a second replica or a retried job
    changes nothing.
    """

    __tablename__ = "escalations"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # alert | manual | break_glass
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(32))
    alert_group_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    channel_id: Mapped[str] = mapped_column(String(32), index=True)
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    card_ts: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(Text)  # JSON snapshot of the policy at start
    status: Mapped[str] = mapped_column(String(16), index=True)  # active | snoozed | acknowledged | resolved
    version: Mapped[int] = mapped_column(Integer, default=1)
    step_seq: Mapped[int] = mapped_column(Integer, default=0)  # steps fired so far
    current_level: Mapped[int] = mapped_column(Integer, default=0)  # last level paged, 0 = none yet
    cycle: Mapped[int] = mapped_column(Integer, default=0)  # how many times the chain ran again
    next_level: Mapped[int | None] = mapped_column(Integer)
    next_reason: Mapped[str | None] = mapped_column(String(16))  # start | timer | resume | new_alerts
    next_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fired_by: Mapped[str | None] = mapped_column(String(80))  # replica that fired the last step


class EscalationDelivery(Base):
    """One page to one target for one step (or a webhook acknowledge/resolve).

    ``key`` is unique per escalation, so a step's pages exist once; a sender
    claims a row with a token and a lease before sending, and only the holder of
    the token may mark it sent.
    """

    __tablename__ = "escalation_deliveries"
    __table_args__ = (
        _EscUnique("escalation_id", "key", name="uq_escalation_deliveries_key"),
        _EscIndex("ix_escalation_deliveries_work", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    escalation_id: Mapped[str] = mapped_column(String(16), index=True)
    key: Mapped[str] = mapped_column(String(255))
    step_seq: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # slack_thread | slack_dm | email | webhook
    target: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what to say (never secrets)
    status: Mapped[str] = mapped_column(String(16))  # pending | sending | sent | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_by: Mapped[str | None] = mapped_column(String(80))
    claimed_by: Mapped[str | None] = mapped_column(String(80))  # replica holding the claim


class EscalationEvent(Base):
    """What happened, for the thread's truth and the incident timeline."""

    __tablename__ = "escalation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    escalation_id: Mapped[str] = mapped_column(String(16), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    late_seconds: Mapped[float | None] = mapped_column(_EscFloat)


class EscalationReplica(Base):
    """Each running replica's heartbeat: pages claimed by a replica that stopped beating are
    taken over at once, instead of after their (long) lease."""

    __tablename__ = "escalation_replicas"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
