"""Pruning deletes replay records by send time: index it (main added it after 1fa28a5).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_escalations_sent_at_ms", "escalations", ["sent_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_escalations_sent_at_ms", table_name="escalations")
