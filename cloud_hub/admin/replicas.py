"""The hub replicas sharing this database, as the admin API lists them (read only: each
replica writes its own row, cloud_hub's scale-out code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from cloud_hub.store.schema import hub_replicas


@dataclass(frozen=True, slots=True)
class Replica:
    replica_id: str
    url: str
    key_fingerprint: str
    tee: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def page_replicas(engine: Engine, *, after: str | None, limit: int) -> list[Replica]:
    """Replicas in id order (stopped ones included: `stopped_at` says so)."""
    stmt = select(hub_replicas).order_by(hub_replicas.c.replica_id).limit(limit)
    if after is not None:
        stmt = stmt.where(hub_replicas.c.replica_id > after)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        Replica(
            replica_id=row.replica_id,
            url=row.url,
            key_fingerprint=row.key_fingerprint,
            tee=row.tee,
            started_at=_utc(row.started_at),
            heartbeat_at=_utc(row.heartbeat_at),
            stopped_at=None if row.stopped_at is None else _utc(row.stopped_at),
        )
        for row in rows
    ]
