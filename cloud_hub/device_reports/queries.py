"""Queries of the device-report table: plain functions over an SQLAlchemy Engine (blocking)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_hub.store.schema import device_reports
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord

_PATHS = {
    OutcomePath.LOCAL: "local",
    OutcomePath.ESCALATED: "escalated",
    OutcomePath.DEGRADED: "degraded",
}


def store_outcomes(
    engine: Engine, device_id: uuid.UUID, records: Sequence[OutcomeRecord]
) -> list[uuid.UUID]:
    """Insert the records not yet known (by record id); return the ids now held (all of them)."""
    now = datetime.now(UTC)
    rows = [
        {
            "device_id": str(device_id),
            "record_id": str(r.record_id),
            "kind": "outcome",
            "received_at": now,
            "at_ms": r.at_ms,
            "model_id": r.model_id[:64],
            "model_version": r.model_version,
            "path": _PATHS[r.path],
            "reason": r.reason[:32],
            "local_label": r.local_label,
            "hub_label": r.hub_label,
            "signal": r.signal,
            "latency_us": r.latency_us,
            "hub_latency_us": r.hub_latency_us,
            "hub_error": r.hub_error[:32],
            "body": r.encode(),
        }
        for r in records
    ]
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    statement = insert(device_reports).on_conflict_do_nothing(
        index_elements=["device_id", "record_id"]
    )
    wanted = [str(r.record_id) for r in records]
    with engine.begin() as conn:
        conn.execute(statement, rows)
        held = conn.execute(
            select(device_reports.c.record_id).where(
                device_reports.c.device_id == str(device_id),
                device_reports.c.record_id.in_(wanted),
            )
        ).scalars()
        return [uuid.UUID(v) for v in held]


def count_outcomes(engine: Engine, device_id: uuid.UUID | None = None) -> int:
    query = select(func.count()).select_from(device_reports)
    if device_id is not None:
        query = query.where(device_reports.c.device_id == str(device_id))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def outcome_ids(engine: Engine, device_id: uuid.UUID) -> set[uuid.UUID]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(device_reports.c.record_id).where(device_reports.c.device_id == str(device_id))
        ).scalars()
        return {uuid.UUID(v) for v in rows}
