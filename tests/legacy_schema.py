"""The hub's tables exactly as the code at commit 1fa28a5 defined them (before migrations),
copied here to build the databases that older builds left behind."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
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
    # active | quarantined | revoked
    Column("status", String(16), nullable=False),
    Column("status_reason", String(200), nullable=False, default=""),
    Column("status_changed_at", DateTime(timezone=True), nullable=True),
    # Bumped on every status change: reputation written by a hub that read an older generation
    # (say, before an operator's release) is discarded rather than resurrecting old suspicion.
    Column("generation", Integer, nullable=False, default=0),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    # Reputation: the one-sided CUSUM of standardised check scores. Honest devices sit at 0,
    # so it is written only while it moves (see cloud_hub/reputation_book.py).
    Column("cusum", Float, nullable=False, default=0.0),
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
    # The poisoning checks' verdict: a standardised score, and the failed tier (NULL: passed).
    Column("check_score", Float, nullable=False, default=0.0),
    Column("check_reason", String(32), nullable=True),
    # The replay check: one accepted envelope per (device, nonce), enforced by the database so
    # that it holds across connections, threads and hub replicas alike.
    UniqueConstraint("device_id", "nonce", name="uq_escalations_device_nonce"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("device_id", String(36), nullable=True),
    # quarantine | release | revoke
    Column("action", String(32), nullable=False),
    # hub | operator
    Column("actor", String(32), nullable=False),
    Column("reason", String(200), nullable=False),
    # JSON: the evidence the decision rests on (scores, counts)
    Column("evidence", Text, nullable=False, default="{}"),
)
