"""escalations, their pages and events

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("severity", sa.String(32)),
        # One escalation per alert group: a replayed AlertGroupOpened cannot start a second.
        sa.Column("alert_group_id", sa.Integer, unique=True),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("card_ts", sa.String(32)),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("step_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("current_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cycle", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_level", sa.Integer),
        sa.Column("next_reason", sa.String(16)),
        sa.Column("next_due_at", sa.DateTime(timezone=True)),
        sa.Column("snoozed_until", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(64)),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("fired_by", sa.String(80)),
    )
    op.create_index("ix_escalations_status", "escalations", ["status"])
    op.create_index("ix_escalations_channel_id", "escalations", ["channel_id"])
    op.create_index("ix_escalations_next_due_at", "escalations", ["next_due_at"])

    op.create_table(
        "escalation_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("escalation_id", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("step_seq", sa.Integer, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text, nullable=False, server_default="{}"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.String(32)),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("sent_by", sa.String(80)),
        sa.Column("claimed_by", sa.String(80)),
        sa.UniqueConstraint("escalation_id", "key", name="uq_escalation_deliveries_key"),
    )
    op.create_index("ix_escalation_deliveries_escalation_id", "escalation_deliveries", ["escalation_id"])
    op.create_index("ix_escalation_deliveries_work", "escalation_deliveries", ["status", "next_attempt_at"])

    op.create_table(
        "escalation_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("escalation_id", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(64)),
        sa.Column("level", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("late_seconds", sa.Float),
    )
    op.create_index("ix_escalation_events_escalation_id", "escalation_events", ["escalation_id"])

    op.create_table(
        "escalation_replicas",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("escalation_replicas")
    op.drop_table("escalation_events")
    op.drop_table("escalation_deliveries")
    op.drop_table("escalations")
