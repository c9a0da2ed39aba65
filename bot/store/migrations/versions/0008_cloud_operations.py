"""cloud operations: long Google Cloud operations the bot follows, so a restart resumes them

Revision ID: 0008_cloud_operations
Revises: 0007_audit_hmac
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_cloud_operations"
# Its own branch of the migration graph (migrate() upgrades to "heads"): it touches no other table.
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cloud_operations",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(98), nullable=False),
        sa.Column("operation", sa.String(128)),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="{}"),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("channel_id", sa.String(32)),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("progress_ts", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("lease_owner", sa.String(32)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_cloud_operations_status", "cloud_operations", ["status", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_cloud_operations_status", "cloud_operations")
    op.drop_table("cloud_operations")
