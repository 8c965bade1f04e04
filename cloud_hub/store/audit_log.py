"""Appending to and reading the hash-chained audit log, inside a caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row, desc, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from cloud_hub.audit import AuditEvidence, parse_evidence
from cloud_hub.store.audit_chain import GENESIS, ChainEntry, entry_hash
from cloud_hub.store.schema import audit_events

T = TypeVar("T")
# Two writers that read the same last entry both try to follow it; the unique prev_hash lets
# exactly one commit, and the other tries again on top of it.
CHAIN_ATTEMPTS = 20
REASON_LIMIT = 200


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    device_id: uuid.UUID | None
    action: str
    actor: str
    reason: str
    evidence: AuditEvidence
    prev_hash: str
    entry_hash: str


def append(
    conn: Connection,
    *,
    device_id: uuid.UUID | None,
    action: str,
    actor: str,
    reason: str,
    evidence: AuditEvidence,
    at: datetime | None = None,
) -> str:
    """Add one entry after the last one; returns its hash."""
    at = at or datetime.now(UTC)
    reason = reason[:REASON_LIMIT]
    evidence_json = evidence.model_dump_json()
    last = conn.execute(
        select(audit_events.c.entry_hash).order_by(desc(audit_events.c.id)).limit(1)
    ).scalar_one_or_none()
    prev = last or GENESIS
    digest = entry_hash(
        prev_hash=prev,
        at=at,
        device_id=device_id,
        action=action,
        actor=actor,
        reason=reason,
        evidence_json=evidence_json,
    )
    conn.execute(
        insert(audit_events).values(
            at=at,
            device_id=str(device_id) if device_id else None,
            action=action,
            actor=actor,
            reason=reason,
            evidence=evidence_json,
            prev_hash=prev,
            entry_hash=digest,
        )
    )
    return digest


def _is_chain_race(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return "prev_hash" in str(exc.orig)
    # SQLite: another writer committed after this transaction read (SQLITE_BUSY_SNAPSHOT).
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig)


def in_chained_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` (which appends to the audit log) in one transaction, again if another
    writer took the chain's next link first."""
    for attempt in range(CHAIN_ATTEMPTS):
        try:
            with engine.begin() as conn:
                return work(conn)
        except (IntegrityError, OperationalError) as exc:
            if attempt == CHAIN_ATTEMPTS - 1 or not _is_chain_race(exc):
                raise
    raise AssertionError("unreachable")


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


def event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        at=row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC),
        device_id=_uuid(row.device_id),
        action=row.action,
        actor=row.actor,
        reason=row.reason,
        evidence=parse_evidence(row.evidence),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def chain_entries(conn: Connection, batch: int = 1000) -> Iterator[ChainEntry]:
    """Every entry in id order, read in batches (the log only grows)."""
    after = 0
    while True:
        rows = conn.execute(
            select(audit_events)
            .where(audit_events.c.id > after)
            .order_by(audit_events.c.id)
            .limit(batch)
        ).all()
        for row in rows:
            yield ChainEntry(
                id=row.id,
                at=row.at,
                device_id=_uuid(row.device_id),
                action=row.action,
                actor=row.actor,
                reason=row.reason,
                evidence_json=row.evidence,
                prev_hash=row.prev_hash,
                entry_hash=row.entry_hash,
            )
        if len(rows) < batch:
            return
        after = rows[-1].id
