"""Enrollment tokens with uses and approval, admin tokens, pending devices and last seen, and an
append-only, hash-chained audit log.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_hub.store.audit_chain import GENESIS, entry_hash

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGERS = [
    """CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$""",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()""",
]


def _chain_existing_entries() -> None:
    """Entries written before the chain existed get their links, in id order."""
    bind = op.get_bind()
    audit = sa.table(
        "audit_events",
        sa.column("id", sa.Integer),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("device_id", sa.String),
        sa.column("action", sa.String),
        sa.column("actor", sa.String),
        sa.column("reason", sa.String),
        sa.column("evidence", sa.Text),
        sa.column("prev_hash", sa.String),
        sa.column("entry_hash", sa.String),
    )
    prev = GENESIS
    for row in bind.execute(sa.select(audit).order_by(audit.c.id)).all():
        digest = entry_hash(
            prev_hash=prev,
            at=row.at,
            device_id=row.device_id,
            action=row.action,
            actor=row.actor,
            reason=row.reason,
            evidence_json=row.evidence,
        )
        bind.execute(
            sa.update(audit).where(audit.c.id == row.id).values(prev_hash=prev, entry_hash=digest)
        )
        prev = digest


def upgrade() -> None:
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.add_column(sa.Column("uses_left", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("auto_approve", sa.Boolean, nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE enrollment_tokens SET uses_left = 0 WHERE used_at IS NOT NULL")

    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "admin_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(200), nullable=False),
    )

    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("entry_hash", sa.String(64), nullable=True))
    _chain_existing_entries()
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("entry_hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_audit_events_prev_hash", ["prev_hash"])
    triggers = _SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _POSTGRES_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_events_no_update")
        op.execute("DROP TRIGGER audit_events_no_delete")
    else:
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_prev_hash", type_="unique")
        batch.drop_column("entry_hash")
        batch.drop_column("prev_hash")
    op.drop_table("admin_tokens")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("auto_approve")
        batch.drop_column("uses_left")
