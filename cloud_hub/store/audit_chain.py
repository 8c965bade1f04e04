"""The audit log's hash chain (pure): each entry carries the hash of the one before it.

    entry_hash = SHA-256(canonical JSON of {v, prev, at_us, device_id, action, actor, reason,
                                             evidence})

`prev` is the previous entry's `entry_hash` (GENESIS for the first), `at_us` the entry's time
in microseconds since the epoch (UTC), `evidence` the stored canonical JSON text. An entry
changed in place no longer matches its own hash; one removed or inserted breaks the next
entry's `prev`. The database refuses UPDATE and DELETE on the table (triggers), and a unique
`prev_hash` keeps two writers from forking the chain. What the chain cannot show: entries cut
off the end (compare the count or the last hash with one kept elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

CHAIN_VERSION = 1
GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainEntry:
    id: int
    at: datetime
    device_id: uuid.UUID | None
    action: str
    actor: str
    reason: str
    # The evidence exactly as stored (canonical JSON of an `AuditEvidence` model).
    evidence_json: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class BrokenLink:
    entry_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    entries: int
    last_hash: str
    # The first entry at which the chain does not hold; None when it all verifies.
    first_broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def _micros(at: datetime) -> int:
    # SQLite hands back naive datetimes: the hub writes only UTC.
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def entry_hash(
    *,
    prev_hash: str,
    at: datetime,
    device_id: uuid.UUID | str | None,
    action: str,
    actor: str,
    reason: str,
    evidence_json: str,
) -> str:
    body = {
        "v": CHAIN_VERSION,
        "prev": prev_hash,
        "at_us": _micros(at),
        "device_id": str(device_id) if device_id is not None else None,
        "action": action,
        "actor": actor,
        "reason": reason,
        "evidence": evidence_json,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def verify_chain(entries: Iterable[ChainEntry]) -> ChainVerdict:
    """Check every link in id order; name the first entry where the chain breaks."""
    expected_prev, count = GENESIS, 0
    for entry in entries:
        count += 1
        if entry.prev_hash != expected_prev:
            return ChainVerdict(
                count, expected_prev, BrokenLink(entry.id, "does not follow the entry before it")
            )
        recomputed = entry_hash(
            prev_hash=entry.prev_hash,
            at=entry.at,
            device_id=entry.device_id,
            action=entry.action,
            actor=entry.actor,
            reason=entry.reason,
            evidence_json=entry.evidence_json,
        )
        if recomputed != entry.entry_hash:
            return ChainVerdict(
                count, expected_prev, BrokenLink(entry.id, "its contents do not match its hash")
            )
        expected_prev = entry.entry_hash
    return ChainVerdict(count, expected_prev, None)
