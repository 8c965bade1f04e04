"""The table of device reports (outcome records now), on the hub's shared `metadata`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)

from cloud_hub.store.schema import metadata

device_reports = Table(
    "device_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(36), nullable=False),
    # The device's id for the item: one row per (device, record id), whatever the retries.
    Column("record_id", String(36), nullable=False),
    # outcome (audit_reveal later)
    Column("kind", String(16), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("model_id", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    # local | escalated | degraded, and the agent's AnswerReason
    Column("path", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("local_label", Integer, nullable=False),
    Column("hub_label", Integer, nullable=True),
    Column("signal", Float, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("hub_latency_us", BigInteger, nullable=True),
    Column("hub_error", String(32), nullable=False, default=""),
    # The item exactly as the device signed it (canonical encoding).
    Column("body", LargeBinary, nullable=False),
    UniqueConstraint("device_id", "record_id", name="uq_device_reports_device_record"),
)
