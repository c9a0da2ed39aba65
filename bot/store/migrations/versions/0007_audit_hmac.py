"""audit log chained with an HMAC: each row records how its hash was made

Rows written before this revision keep their plain SHA-256 chain and are marked
``sha256``; rows written from now on are ``hmac-sha256`` keyed by AIA_AUDIT_KEY.
`aia-bot audit rekey` (docs/security.md) turns the old rows into keyed ones after
checking their chain.

Revision ID: 0007_audit_hmac
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_audit_hmac"
# The audit table comes from 0001; the other branches (0004, 0005, 0006) do not touch it.
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("scheme", sa.String(16), nullable=False, server_default="sha256"))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("scheme")
