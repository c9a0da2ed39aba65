"""alert groups, alerts, the Slack outbox and per-channel pacing

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("receiver", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("severity_rank", sa.Integer, nullable=False),
        sa.Column("alertnames", sa.Text, nullable=False),
        sa.Column("group_labels", sa.Text, nullable=False),
        sa.Column("common_labels", sa.Text, nullable=False),
        sa.Column("common_annotations", sa.Text, nullable=False),
        sa.Column("external_url", sa.Text, nullable=False, server_default=""),
        sa.Column("truncated_alerts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("firing_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("resolved_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("previous_id", sa.Integer),
        sa.Column("channel_id", sa.String(32)),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("permalink", sa.Text),
        sa.Column("opened_published", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_alert_groups_key_hash", "alert_groups", ["key_hash"])
    # One open episode per groupKey, whichever replica receives the webhook.
    op.create_index(
        "uq_alert_groups_open_key", "alert_groups", ["key_hash"], unique=True,
        postgresql_where=sa.text("status = 'firing'"), sqlite_where=sa.text("status = 'firing'"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("alert_groups.id"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("alertname", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("annotations", sa.Text, nullable=False),
        sa.Column("generator_url", sa.Text, nullable=False, server_default=""),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("key_hash", "fingerprint", "starts_at", name="uq_alerts_identity"),
    )
    op.create_index("ix_alerts_group_id", "alerts", ["group_id"])
    op.create_table(
        "slack_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(80), nullable=False),
        sa.Column("group_id", sa.Integer),
        sa.Column("coalesce_key", sa.String(120)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False, server_default="{}"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("claimed_by", sa.String(80)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("result_ts", sa.String(32)),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_slack_outbox_group_id", "slack_outbox", ["group_id"])
    op.create_index("ix_slack_outbox_queue", "slack_outbox", ["state", "priority", "id"])
    # A burst of changes to one message leaves a single pending row (coalescing).
    op.create_index(
        "uq_slack_outbox_pending_key", "slack_outbox", ["coalesce_key"], unique=True,
        postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "slack_outbox_channels",
        sa.Column("channel", sa.String(80), primary_key=True),
        sa.Column("next_post_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("storm_ts", sa.String(32)),
        sa.Column("storm_started_at", sa.Float),
        sa.Column("storm_posted", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("slack_outbox_channels")
    op.drop_index("uq_slack_outbox_pending_key", "slack_outbox")
    op.drop_index("ix_slack_outbox_queue", "slack_outbox")
    op.drop_index("ix_slack_outbox_group_id", "slack_outbox")
    op.drop_table("slack_outbox")
    op.drop_index("ix_alerts_group_id", "alerts")
    op.drop_table("alerts")
    op.drop_index("uq_alert_groups_open_key", "alert_groups")
    op.drop_index("ix_alert_groups_key_hash", "alert_groups")
    op.drop_table("alert_groups")
