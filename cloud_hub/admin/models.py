"""Request and response bodies of the admin API: frozen, strict pydantic models (unknown
fields refused). The OpenAPI document is generated from these same types."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from cloud_hub.audit import AuditEvidence
from cloud_hub.store import AuditEvent, ChainVerdict, Device, EnrollmentToken

DeviceStatus = Literal["pending", "active", "quarantined", "revoked"]
MAX_PAGE = 500


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the hub writes only UTC, and the wire says so
    # (RFC 3339 needs the offset).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class AdminModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class StatusChange(AdminModel):
    """Why an administrator changes a device's status (kept in the audit log)."""

    reason: str = Field(default="by administrator", min_length=1, max_length=200)


class DeviceOut(AdminModel):
    device_id: uuid.UUID
    profile: str
    status: DeviceStatus
    status_reason: str
    enrolled_at: UtcDatetime
    status_changed_at: UtcDatetime | None
    last_seen_at: UtcDatetime | None
    cusum: float

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            device_id=d.device_id,
            profile=d.profile,
            status=d.status,  # type: ignore[arg-type]
            status_reason=d.status_reason,
            enrolled_at=d.enrolled_at,
            status_changed_at=d.status_changed_at,
            last_seen_at=d.last_seen_at,
            cusum=d.cusum,
        )


class DevicePage(AdminModel):
    items: list[DeviceOut]
    # Pass as `cursor` for the next page; null on the last one.
    next_cursor: str | None


class TokenCreate(AdminModel):
    ttl_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    uses: int = Field(default=1, ge=1, le=10_000)
    # Omitted: the policy's auto_approve.
    auto_approve: bool | None = None
    note: str = Field(default="", max_length=200)

    @field_validator("ttl_hours")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number of hours")
        return value


class TokenCreated(AdminModel):
    # The secret, shown this once: only its hash is kept.
    token: str
    token_id: str
    expires_at: UtcDatetime
    uses: int
    auto_approve: bool


class TokenOut(AdminModel):
    token_id: str
    created_at: UtcDatetime
    expires_at: UtcDatetime
    uses_left: int
    auto_approve: bool
    note: str
    used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None

    @classmethod
    def of(cls, t: EnrollmentToken) -> TokenOut:
        return cls(
            token_id=t.token_hash,
            created_at=t.created_at,
            expires_at=t.expires_at,
            uses_left=t.uses_left,
            auto_approve=t.auto_approve,
            note=t.note,
            used_at=t.used_at,
            revoked_at=t.revoked_at,
        )


class TokenList(AdminModel):
    items: list[TokenOut]


class AuditEntry(AdminModel):
    id: int
    at: UtcDatetime
    device_id: uuid.UUID | None
    action: str
    actor: str
    reason: str
    evidence: AuditEvidence
    prev_hash: str
    entry_hash: str

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEntry:
        return cls(
            id=e.id,
            at=e.at,
            device_id=e.device_id,
            action=e.action,
            actor=e.actor,
            reason=e.reason,
            evidence=e.evidence,
            prev_hash=e.prev_hash,
            entry_hash=e.entry_hash,
        )


class AuditPage(AdminModel):
    items: list[AuditEntry]
    next_cursor: str | None


class BrokenLinkOut(AdminModel):
    entry_id: int
    reason: str


class ChainReport(AdminModel):
    ok: bool
    entries: int
    last_hash: str
    first_broken: BrokenLinkOut | None

    @classmethod
    def of(cls, v: ChainVerdict) -> ChainReport:
        broken = v.first_broken
        return cls(
            ok=v.ok,
            entries=v.entries,
            last_hash=v.last_hash,
            first_broken=None
            if broken is None
            else BrokenLinkOut(entry_id=broken.entry_id, reason=broken.reason),
        )
