"""approval requests (two-person rule)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("procedure", sa.String(64), nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("target_key", sa.String(255), nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("preview", sa.Text, nullable=False),
        sa.Column("requester_id", sa.String(32), nullable=False),
        sa.Column("requester_email", sa.String(255)),
        sa.Column("team_id", sa.String(32)),
        sa.Column("channel_id", sa.String(32)),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False, server_default="1"),
        sa.Column("approvals", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("decided_by", sa.String(32)),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("executed_at", sa.DateTime(timezone=True)),
        sa.Column("result", sa.Text),
        sa.Column("break_glass_reason", sa.Text),
    )
    op.create_index("ix_approval_requests_status", "approval_requests", ["status"])
    op.create_index("ix_approval_requests_expires_at", "approval_requests", ["expires_at"])
    # One open request per target: the database refuses a second, whichever replica asks.
    op.create_index(
        "uq_approval_requests_open_target",
        "approval_requests",
        ["target_key"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'approved', 'executing')"),
        sqlite_where=sa.text("status IN ('pending', 'approved', 'executing')"),
    )


def downgrade() -> None:
    op.drop_index("uq_approval_requests_open_target", "approval_requests")
    op.drop_index("ix_approval_requests_expires_at", "approval_requests")
    op.drop_index("ix_approval_requests_status", "approval_requests")
    op.drop_table("approval_requests")
