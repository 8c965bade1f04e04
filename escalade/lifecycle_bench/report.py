"""The figures of `escalade bench lifecycle` (JSON with --json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AdapterResult(_Model):
    kind: str
    adapted_hub_accuracy: float
    retrained_hub_accuracy: float
    # retrained - adapted, in percentage points (target <= 0.5)
    gap_pp: float
    fit_s: float


class AdapterSection(_Model):
    v1: str
    v2: str
    pairs: int
    results: list[AdapterResult]


class LoopRound(_Model):
    round: int
    escalation_rate: float
    cascade_accuracy: float
    edge_accuracy: float
    distill_samples: int
    refused: int


class LoopSection(_Model):
    devices: int
    poisoners: int
    requests_per_device: int
    rounds: list[LoopRound]


class BadBundle(_Model):
    name: str
    devices: int
    refused_or_rolled_back: int
    requests_served: int
    requests_failed: int
    codes: list[str]


class Target(_Model):
    name: str
    figure: str
    met: bool


class LifecycleReport(_Model):
    dataset: str
    seed: int
    quick: bool
    adapter: AdapterSection
    loop: LoopSection
    poisoned_loop: LoopSection
    # Distilled head accuracy, poisoned fleet minus clean fleet, after the last round (pp).
    poisoned_shift_pp: float
    bad_bundles: list[BadBundle]
    targets: list[Target]
    seconds: float
