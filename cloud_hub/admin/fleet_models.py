"""Bodies of the admin API's model catalogue, policy, stats and replica endpoints (frozen,
strict, unknown fields refused), beside cloud_hub/admin/models.py's devices, tokens and audit."""

from __future__ import annotations

import uuid

from pydantic import Field, model_validator

from cloud_hub.admin.models import AdminModel, UtcDatetime
from cloud_hub.admin.replicas import Replica
from cloud_hub.admin.stats import Tally
from cloud_hub.store.catalog import (
    MODEL_ID_PATTERN,
    FileDigest,
    ModelSummary,
    ModelVersion,
    ReferenceSummary,
)
from cloud_hub.store.policies import HubPolicy, StoredPolicy

# -- models ---------------------------------------------------------------------------------


class ModelRegister(AdminModel):
    model_id: str = Field(pattern=MODEL_ID_PATTERN)
    # The escalations table's model_version is a 32-bit integer on every engine.
    version: int = Field(ge=1, lt=2**31)
    files: list[FileDigest] = Field(min_length=1, max_length=64)
    reference: ReferenceSummary
    note: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _unique_paths(self) -> ModelRegister:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("files: each path once")
        return self


class ModelVersionOut(AdminModel):
    model_id: str
    version: int
    registered_at: UtcDatetime
    note: str
    files: list[FileDigest]
    reference: ReferenceSummary

    @classmethod
    def of(cls, v: ModelVersion) -> ModelVersionOut:
        return cls(
            model_id=v.model_id,
            version=v.version,
            registered_at=v.registered_at,
            note=v.note,
            files=list(v.files),
            reference=v.reference,
        )


class ModelOut(AdminModel):
    model_id: str
    created_at: UtcDatetime
    versions: list[int]

    @classmethod
    def of(cls, m: ModelSummary) -> ModelOut:
        return cls(model_id=m.model_id, created_at=m.created_at, versions=list(m.versions))


class ModelPage(AdminModel):
    items: list[ModelOut]
    next_cursor: str | None


class ModelDetail(AdminModel):
    model_id: str
    versions: list[ModelVersionOut]


# -- policy ---------------------------------------------------------------------------------


class PolicyOut(AdminModel):
    policy: HubPolicy
    # 0: never set, the built-in defaults apply.
    revision: int
    updated_at: UtcDatetime | None

    @classmethod
    def of(cls, p: StoredPolicy) -> PolicyOut:
        return cls(policy=p.policy, revision=p.revision, updated_at=p.updated_at)


# -- stats ----------------------------------------------------------------------------------


class RefusalCount(AdminModel):
    # The hub's error code, as the agent recorded it (escalade_protocol.errors.ErrorCode).
    code: str
    count: int


class LatencyPercentiles(AdminModel):
    """The hub round trip of answered escalations, as agents measured it (µs)."""

    samples: int
    p50_us: int | None
    p90_us: int | None
    p99_us: int | None


class Figures(AdminModel):
    # Outcome records agents delivered (one per answer they gave).
    outcomes: int
    answered_locally: int
    # Escalations the hub answered.
    escalated: int
    # Answers that wanted the hub and were given locally (refused, unreachable, held back).
    degraded: int
    # Escalations the hub refused, by its error code (a subset of `degraded`).
    refusals: list[RefusalCount]
    hub_latency: LatencyPercentiles
    # Escalations the hub itself recorded as accepted, from its replay records: those are
    # kept for twice the timestamp window only, so this counts the last minutes.
    hub_accepted_recent: int

    @classmethod
    def of(cls, t: Tally) -> Figures:
        p50, p90, p99 = t.latency_percentiles()
        return cls(
            outcomes=t.outcomes,
            answered_locally=t.local,
            escalated=t.escalated,
            degraded=t.degraded,
            refusals=[RefusalCount(code=c, count=n) for c, n in sorted(t.refusals.items())],
            hub_latency=LatencyPercentiles(
                samples=len(t.hub_latencies_us), p50_us=p50, p90_us=p90, p99_us=p99
            ),
            hub_accepted_recent=t.hub_accepted_recent,
        )


class DeviceCost(AdminModel):
    """What the device's answered escalations cost the hub, all time (`device_costs`)."""

    answers: int
    # Hub model time, summed over the models run for each answer.
    model_ms: float
    request_bytes: int
    # Declared price of the models run (the bundle's price per 1000, or --hub-price).
    price: float


class DeviceStats(AdminModel):
    device_id: uuid.UUID
    figures: Figures
    # None until the hub has flushed a cost for the device (every few seconds).
    cost: DeviceCost | None = None


class DeviceStatsPage(AdminModel):
    since: UtcDatetime
    items: list[DeviceStats]
    next_cursor: str | None


class ModelStats(AdminModel):
    model_id: str
    model_version: int
    figures: Figures


class ModelStatsList(AdminModel):
    since: UtcDatetime
    items: list[ModelStats]


# -- replicas -------------------------------------------------------------------------------


class ReplicaOut(AdminModel):
    replica_id: str
    url: str
    key_fingerprint: str
    tee: str
    started_at: UtcDatetime
    heartbeat_at: UtcDatetime
    # Set when it shut down cleanly.
    stopped_at: UtcDatetime | None

    @classmethod
    def of(cls, r: Replica) -> ReplicaOut:
        return cls(
            replica_id=r.replica_id,
            url=r.url,
            key_fingerprint=r.key_fingerprint,
            tee=r.tee,
            started_at=r.started_at,
            heartbeat_at=r.heartbeat_at,
            stopped_at=r.stopped_at,
        )


class ReplicaPage(AdminModel):
    items: list[ReplicaOut]
    next_cursor: str | None
