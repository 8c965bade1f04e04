"""The `hub_replicas` table: hub processes that share this database register, heartbeat and
sign off here; the live ones are those whose heartbeat is recent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from cloud_hub.store.schema import hub_replicas


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    replica_id: uuid.UUID
    url: str
    key_id: bytes
    tee: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None


class ReplicaTable:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def heartbeat(self, row: ReplicaRow) -> None:
        """Register the replica, or renew its heartbeat (and its URL and key, which a restart
        under the same id may change)."""
        values = {
            "url": row.url,
            "key_fingerprint": row.key_id.hex(),
            "tee": row.tee,
            "heartbeat_at": row.heartbeat_at,
            "stopped_at": None,
        }
        with self._engine.begin() as conn:
            renewed = conn.execute(
                update(hub_replicas)
                .where(hub_replicas.c.replica_id == str(row.replica_id))
                .values(**values)
            ).rowcount
            if not renewed:
                conn.execute(
                    hub_replicas.insert().values(
                        replica_id=str(row.replica_id), started_at=row.started_at, **values
                    )
                )

    def sign_off(self, replica_id: uuid.UUID, at: datetime) -> None:
        """A clean shutdown: the replica leaves the list at once, not after the window."""
        with self._engine.begin() as conn:
            conn.execute(
                update(hub_replicas)
                .where(hub_replicas.c.replica_id == str(replica_id))
                .values(stopped_at=at)
            )

    def live(self, heartbeat_since: datetime) -> list[ReplicaRow]:
        """Replicas not signed off whose last heartbeat is at or after `heartbeat_since`."""
        t = hub_replicas.c
        stmt = (
            select(hub_replicas)
            .where(t.stopped_at.is_(None), t.heartbeat_at >= heartbeat_since)
            .order_by(t.started_at, t.replica_id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            ReplicaRow(
                replica_id=uuid.UUID(r.replica_id),
                url=r.url,
                key_id=bytes.fromhex(r.key_fingerprint),
                tee=r.tee,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
            )
            for r in rows
        ]
