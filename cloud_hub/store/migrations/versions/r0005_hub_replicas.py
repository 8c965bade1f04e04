"""Hub replicas: hub processes that share this database, each with its own attested key.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_replicas",
        sa.Column("replica_id", sa.String(36), primary_key=True),
        sa.Column("url", sa.String(200), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("tee", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("hub_replicas")
