"""Bodies of the admin API's bundle, rollout and device-model endpoints (frozen, strict)."""

from __future__ import annotations

import math
import uuid
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cloud_hub.admin.models import AdminModel, UtcDatetime
from cloud_hub.rollouts import BUCKETS, AutoAdvance, Rollout
from cloud_hub.store.rollouts import BundleRecord, DeviceModel
from escalade_protocol.bundles import DIGEST_PATTERN

RolloutStateName = Literal["active", "paused", "rolled_back"]


def _basis_points(percent: float) -> int:
    return round(percent * 100)


class _Percent(AdminModel):
    @field_validator("percent", check_fields=False)
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value) or not 0 < value <= 100:
            raise ValueError("must be a share of the fleet in (0, 100]")
        if abs(value * 100 - round(value * 100)) > 1e-6:
            raise ValueError("at most two decimals (basis points)")
        return value


class BundleOut(AdminModel):
    digest: str
    model_id: str
    model_version: int
    # The release key id whose signature verified; null: no key pinned at upload.
    signer: str | None
    size_bytes: int
    registered_at: UtcDatetime
    note: str

    @classmethod
    def of(cls, b: BundleRecord) -> BundleOut:
        return cls(
            digest=b.digest,
            model_id=b.model_id,
            model_version=b.model_version,
            signer=b.signer,
            size_bytes=b.size_bytes,
            registered_at=b.registered_at,
            note=b.note,
        )


class BundleList(AdminModel):
    items: list[BundleOut]


class RolloutCreate(_Percent):
    """A bundle to named devices, or to a share of the fleet (optionally of one profile)."""

    bundle_digest: str = Field(pattern=DIGEST_PATTERN)
    devices: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=10_000)
    profile: str | None = Field(default=None, min_length=1, max_length=64)
    # Percent of the fleet (two decimals); the staged ladder is 1 -> 10 -> 100.
    percent: float | None = None
    note: str = Field(default="", max_length=200)
    # Advance by itself (1 -> 10 -> 100) while its devices' answers stay within these bounds.
    auto: AutoAdvance | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RolloutCreate:
        if self.devices is not None and (self.percent is not None or self.profile is not None):
            raise ValueError("give devices, or a percent (and perhaps a profile), not both")
        if self.devices is None and self.percent is None:
            raise ValueError("give devices or a percent of the fleet")
        if self.auto is not None and self.devices is not None:
            raise ValueError("a rollout to named devices has no stages to advance")
        return self

    @property
    def percent_bp(self) -> int:
        return BUCKETS if self.percent is None else _basis_points(self.percent)


class RolloutAdvance(_Percent):
    # The new share of the fleet; omitted: the ladder's next step (1 -> 10 -> 100).
    percent: float | None = None
    reason: str = Field(default="by administrator", min_length=1, max_length=200)

    @property
    def percent_bp(self) -> int | None:
        return None if self.percent is None else _basis_points(self.percent)


class RolloutChange(AdminModel):
    reason: str = Field(default="by administrator", min_length=1, max_length=200)


class RolloutOut(AdminModel):
    rollout_id: int
    bundle_digest: str
    devices: list[uuid.UUID] | None
    profile: str | None
    percent: float
    state: RolloutStateName
    created_at: UtcDatetime
    updated_at: UtcDatetime
    note: str
    auto: AutoAdvance | None

    @classmethod
    def of(cls, r: Rollout) -> RolloutOut:
        return cls(
            rollout_id=r.rollout_id,
            bundle_digest=r.bundle_digest,
            devices=sorted(r.devices) if r.devices is not None else None,
            profile=r.profile,
            percent=r.percent_bp / 100,
            state=r.state.value,
            created_at=r.created_at,
            updated_at=r.updated_at,
            note=r.note,
            auto=r.auto,
        )


class RolloutList(AdminModel):
    items: list[RolloutOut]


BundleStateName = Literal["current", "pending", "rolled_back", "refused"]


class DeviceModelOut(AdminModel):
    """What a device last reported it runs, and what the rollouts assign it now."""

    device_id: uuid.UUID
    # Null until the device has reported (agents report their model every status period).
    model_id: str | None
    model_version: int | None
    bundle_digest: str | None
    state: BundleStateName | None
    # The assigned bundle the state is about (pending, rolled back or refused).
    target_digest: str | None
    code: str
    detail: str
    reported_at: UtcDatetime | None
    # The newest live rollout covering the device; null: its installed bundle.
    assigned_rollout: int | None
    assigned_digest: str | None

    @classmethod
    def of(
        cls, device_id: uuid.UUID, reported: DeviceModel | None, assigned: Rollout | None
    ) -> DeviceModelOut:
        return cls(
            device_id=device_id,
            model_id=reported.model_id if reported else None,
            model_version=reported.model_version if reported else None,
            bundle_digest=reported.bundle_digest if reported else None,
            state=reported.state if reported else None,  # type: ignore[arg-type]
            target_digest=reported.target_digest if reported else None,
            code=reported.code if reported else "",
            detail=reported.detail if reported else "",
            reported_at=reported.reported_at if reported else None,
            assigned_rollout=assigned.rollout_id if assigned else None,
            assigned_digest=assigned.bundle_digest if assigned else None,
        )


class DeviceModelList(AdminModel):
    items: list[DeviceModelOut]


class RolloutTally(AdminModel):
    # Devices the rollout assigns its bundle to now (newest covering rollout).
    assigned: int
    # Of those, devices that report running the bundle.
    running: int
    pending: int
    rolled_back: int
    refused: int


class RolloutDetail(AdminModel):
    rollout: RolloutOut
    tally: RolloutTally
    devices: list[DeviceModelOut]
