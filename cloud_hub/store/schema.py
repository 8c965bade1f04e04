"""Tables of the hub's database (SQLAlchemy Core; SQLite by default, PostgreSQL to scale out)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    # SHA-256 of the token: the token itself is never stored.
    Column("token_hash", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("device_id", String(36), nullable=True),
    Column("note", String(200), nullable=False, default=""),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(36), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False, unique=True),
    Column("profile", String(64), nullable=False),
    # active | revoked
    Column("status", String(16), nullable=False),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(36), ForeignKey("devices.device_id"), nullable=False),
    Column("nonce", LargeBinary(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sent_at_ms", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("label", Integer, nullable=False),
    Column("request_digest", LargeBinary(32), nullable=False),
    # The replay check: one accepted envelope per (device, nonce), enforced by the database so
    # that it holds across connections, threads and hub replicas alike.
    UniqueConstraint("device_id", "nonce", name="uq_escalations_device_nonce"),
)
