"""What each device's escalations cost the hub: answers, hub model time, bytes, price.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_costs",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("answers", sa.BigInteger, nullable=False),
        sa.Column("model_us", sa.BigInteger, nullable=False),
        sa.Column("request_bytes", sa.BigInteger, nullable=False),
        sa.Column("price_micros", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_costs")
