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
    latency_us: Latency  # at d = 384, synthetic reference statistics
    latency_us_native: Latency  # at the bundle's embedding dimension
    seconds: float
