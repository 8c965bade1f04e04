"""Which bundle a device runs: pure functions over rollouts (no database, no clock).

A rollout names a bundle and a target: explicit devices, or a share of the fleet (basis points,
optionally within one profile). A device is in a share when the stable hash of (rollout id,
device id) falls in the first `percent_bp` of 10 000 buckets, so raising a rollout from 1% to
10% to 100% only adds devices, and two rollouts draw independent samples. A device runs the
bundle of the newest rollout that covers it and is not rolled back (paused: covered devices
keep it, none is added); covered by none, it runs the bundle it was installed with.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from escalade_protocol.errors import ErrorCode, ProtocolError

BUCKETS: Final = 10_000
# The staged rollout's default ladder, in basis points: 1% -> 10% -> 100%.
LADDER: Final = (100, 1_000, 10_000)
_DOMAIN: Final = b"escalade/v1/rollout-bucket\x00"


class RolloutState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"


class AutoAdvance(BaseModel):
    """The bounds a rollout advances within (absent: only an administrator advances it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    min_outcomes: int = Field(default=200, ge=1, le=10_000_000)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    # Absolute: 0.05 lets the escalation rate go from 20% to 25% at most.
    max_escalation_increase: float = Field(default=0.05, ge=0, le=1)


@dataclass(frozen=True, slots=True)
class Rollout:
    rollout_id: int
    bundle_digest: str
    # Explicit devices (then `profile` is None and `percent_bp` is BUCKETS), or None.
    devices: frozenset[uuid.UUID] | None
    profile: str | None
    percent_bp: int
    state: RolloutState
    created_at: datetime
    updated_at: datetime
    note: str = ""
    # Advance automatically within these bounds (cloud_hub/rollouts/auto.py); None: by hand.
    auto: AutoAdvance | None = None


def bucket(rollout_id: int, device_id: uuid.UUID) -> int:
    """The device's bucket in [0, BUCKETS) for this rollout (SHA-256: the same on every hub)."""
    h = hashlib.sha256(_DOMAIN + rollout_id.to_bytes(8, "big") + device_id.bytes).digest()
    return int.from_bytes(h[:8], "big") % BUCKETS


def covers(rollout: Rollout, device_id: uuid.UUID, profile: str) -> bool:
    if rollout.state is RolloutState.ROLLED_BACK:
        return False
    if rollout.devices is not None:
        return device_id in rollout.devices
    if rollout.profile is not None and rollout.profile != profile:
        return False
    return bucket(rollout.rollout_id, device_id) < rollout.percent_bp


def assignment(rollouts: Iterable[Rollout], device_id: uuid.UUID, profile: str) -> Rollout | None:
    """The newest rollout covering the device, or None (it runs its installed bundle)."""
    covering = [r for r in rollouts if covers(r, device_id, profile)]
    return max(covering, key=lambda r: r.rollout_id, default=None)


def next_stage(percent_bp: int) -> int:
    """The ladder's next step above `percent_bp`; CONFLICT at 100%."""
    for stage in LADDER:
        if stage > percent_bp:
            return stage
    raise ProtocolError(ErrorCode.CONFLICT, "the rollout already covers 100%")


def advanced(rollout: Rollout, percent_bp: int | None) -> int:
    """The share after an advance: the given one (never lower) or the ladder's next step."""
    if rollout.state is RolloutState.ROLLED_BACK:
        raise ProtocolError(ErrorCode.CONFLICT, "a rolled-back rollout cannot advance")
    if rollout.devices is not None:
        raise ProtocolError(ErrorCode.CONFLICT, "a rollout to named devices has no stages")
    target = next_stage(rollout.percent_bp) if percent_bp is None else percent_bp
    if target <= rollout.percent_bp:
        raise ProtocolError(
            ErrorCode.CONFLICT,
            f"the rollout covers {rollout.percent_bp / 100:g}% already; roll back to shrink it",
        )
    return target
