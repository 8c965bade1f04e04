"""The hub's policy: replay window, poisoning thresholds (refuse and reputation bands) and
auto-approval, stored as one typed document and edited through the admin API.

`load_policy(engine)` is what the escalation service reads; with no stored row it returns
today's built-in defaults, so a hub whose administrator never set a policy behaves as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, Engine, insert, select, update

from cloud_hub.audit import OperatorEvidence
from cloud_hub.store import audit_log
from cloud_hub.store.schema import policies

POLICY_NAME = "hub"


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _finite(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ReputationPolicy(_Doc):
    """The per-device CUSUM (cloud_hub.poisoning.reputation.ReputationParams, same defaults)."""

    # k: the score per message an honest device stays under.
    drift_allowance: float = Field(default=0.935, gt=0, le=10)
    # h: the CUSUM at which a device counts as over the limit.
    decision_limit: float = Field(default=20.0, gt=0, le=10_000)
    # x for a failed check.
    failure_score: float = Field(default=2.0, gt=0, le=100)
    # Consecutive messages at or over h before quarantine.
    hold: int = Field(default=10, ge=1, le=10_000)
    # The CUSUM never exceeds this.
    ceiling: float = Field(default=40.0, gt=0, le=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> ReputationPolicy:
        if self.drift_allowance >= self.failure_score:
            raise ValueError("drift_allowance must be below failure_score")
        if self.decision_limit > self.ceiling:
            raise ValueError("decision_limit must not exceed ceiling")
        return self


class HubPolicy(_Doc):
    """What an administrator may tune without a new build (defaults: today's behaviour)."""

    # How far an envelope's timestamp may be from the hub's clock, either way; replay records
    # are kept for twice this.
    timestamp_window_ms: int = Field(default=60_000, ge=1_000, le=3_600_000)
    # Check scores over 1 count against a device's reputation; over this, the embedding is
    # also refused (embedding_rejected). At least 1: the band below 1 is the clean one.
    reject_score: float = Field(default=1.25, ge=1.0, le=100.0)
    reputation: ReputationPolicy = ReputationPolicy()
    # Whether an enrollment token made without saying so activates its devices at once
    # (False: they wait, pending, for an administrator's approval).
    auto_approve: bool = True
    # Audits by re-encoding (docs/provenance.md): the share of answered escalations whose
    # input the device must reveal to the enclave; None: this replica's --audit-rate.
    audit_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    def summary(self) -> str:
        r = self.reputation
        return (
            f"window {self.timestamp_window_ms} ms, refuse over {self.reject_score:g}, "
            f"quarantine at {r.decision_limit:g} for {r.hold} (k {r.drift_allowance:g}, "
            f"failure {r.failure_score:g}, ceiling {r.ceiling:g}), "
            f"auto-approve {'on' if self.auto_approve else 'off'}"
            + ("" if self.audit_rate is None else f", audits {self.audit_rate:.2%}")
        )


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: HubPolicy
    # 0: nothing stored, the defaults apply.
    revision: int
    updated_at: datetime | None


def _read(conn: Connection) -> StoredPolicy:
    row = conn.execute(select(policies).where(policies.c.name == POLICY_NAME)).first()
    if row is None:
        return StoredPolicy(HubPolicy(), 0, None)
    at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return StoredPolicy(HubPolicy.model_validate_json(row.document), row.revision, at)


def load_policy(engine: Engine) -> HubPolicy:
    """The hub's policy now: the stored one, or the defaults when none was ever set."""
    return load_stored_policy(engine).policy


def load_stored_policy(engine: Engine) -> StoredPolicy:
    with engine.connect() as conn:
        return _read(conn)


def save_policy(engine: Engine, policy: HubPolicy, *, actor: str = "admin") -> StoredPolicy:
    """Replace the policy, audited, in one transaction; returns it with its new revision."""
    now = datetime.now(UTC)
    document = policy.model_dump_json()

    def work(conn: Connection) -> StoredPolicy:
        revision = _read(conn).revision + 1
        values = {"document": document, "revision": revision, "updated_at": now}
        if revision == 1:
            conn.execute(insert(policies).values(name=POLICY_NAME, **values))
        else:
            conn.execute(update(policies).where(policies.c.name == POLICY_NAME).values(values))
        audit_log.append(
            conn,
            device_id=None,
            action="policy_update",
            actor=actor,
            reason=f"policy revision {revision}: {policy.summary()}",
            evidence=OperatorEvidence(),
            at=now,
        )
        return StoredPolicy(policy, revision, now)

    return audit_log.in_chained_transaction(engine, work)
