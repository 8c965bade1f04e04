"""The benchmark's JSON report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttackResult(_Model):
    name: str
    strength: str
    n: int  # attacked messages
    auroc: float  # attacked vs honest negatives, by check score
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    flagged_rate: float  # refused by the checker's own bands
    undetected_success_rate: float  # hub answer changed and the check passed
    knn_tpr_at_1pct_fpr: float | None = None  # the off-path k-NN audit, where it applies
    caught_by: str  # which tier is meant to catch it
    # What the hub does about a device that keeps sending this attack (`harm.py`): quarantine
    # by reputation or a failed audit, whichever first. audit_rate 0: audits off (the default).
    audit_rate: float = 0.0
    audit_reveal: str | None = None  # how the attacker answers audits; None: audits off
    attacker_devices: int = 0
    messages_to_quarantine: float | None = None  # median over attackers; None: never in the run
    quarantined_share: float = 0.0
    quarantined_within_300: float = 0.0  # the target: within 300 messages
    flipped_before_quarantine: float = 0.0  # harm: flipped answers per attacker before it


class DriftResult(_Model):
    messages_to_quarantine: int | None  # worst over the drifting devices; None: never
    messages_to_quarantine_each: list[int | None]
    offset_drift_messages_to_quarantine: list[int | None]  # constant-offset drift, per device
    false_quarantines: int
    honest_devices: int
    natural_drift_devices: int  # of the honest devices, those with drifting inputs
    messages_per_device: int


class CohortResult(_Model):
    window: int
    threshold: float
    colluders: int
    colluders_flagged: int
    honest_devices: int
    honest_flagged: int


class HonestFleetRow(_Model):
    """Honest devices under reputation and audits at one rate: none may be quarantined."""

    audit_rate: float
    devices: int
    messages: int
    audits: int
    reputation_quarantines: int
    audit_quarantines: int
    false_quarantines: int  # by either
    worst_distance: float  # largest re-encoding distance of an honest audit (tolerance 0.01)


class InfluenceRow(_Model):
    """A colluding group against one fleet statistic (whitened units; `influence.py`)."""

    statistic: str
    learns_from_traffic: bool
    colluders: int
    honest_devices: int
    bound: float  # what the code claims k colluders can move it by, at most
    measured_unconstrained: float | None = None  # largest shift found, any colluder points
    measured_in_band: float | None = None  # ... with every colluder's messages accepted
    plain_mean_in_band: float | None = None  # baseline: those colluders against a plain mean
    honest_flagged: int | None = None  # by the cohort sweep, the in-band colluders included
    colluders_flagged: int | None = None


class Latency(_Model):
    p50: float
    p99: float
    dim: int


class PoisoningReport(_Model):
    dataset: str
    seed: int
    quick: bool
    embedding_dim: int
    target_fpr: float
    honest_negatives: int
    clean_flag_rate: float  # checker refusals on the untouched test split
    honest_flag_rate: float  # ... on honest-device traffic (natural variation)
    reputation: dict[str, float]
    attacks: list[AttackResult]
    drift: DriftResult
    cohort: CohortResult
    honest_fleet: list[HonestFleetRow]
    influence: list[InfluenceRow]
    audit_tolerance: float
    audit_cost_us: float  # hub cost of one audited message: open, recompute, re-encode, compare
    latency_us: Latency  # at d = 384, synthetic reference statistics
    latency_us_native: Latency  # at the bundle's embedding dimension
    seconds: float
