"""Per-device reputation: a one-sided CUSUM over check scores, with hysteresis. Pure.

Each message contributes x = its check score (<= 1 when it passed) or, when it failed, a fixed
`failure_score`: a failure counts strongly, but one absurd vector counts no more than any other
failure, so a single glitch cannot spend the whole budget. The CUSUM

    C_t = min(ceiling, max(0, C_{t-1} + x_t - k))

stays near 0 while a device's messages look like the clean reference (honest mean x ~ 0.83 on
digits, k = 0.935: see `calibrate`) and climbs at (mean x - k) per message once they drift.
Quarantine needs C >= h for `hold` consecutive messages; the ceiling bounds how much a noisy
spell can pile up, so an honest device recovers from one within ceiling / (k - honest mean)
messages. A quarantined device stays quarantined until an admin releases it (`release`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.checks import CheckResult

State = Literal["active", "quarantined"]


@dataclass(frozen=True, slots=True)
class ReputationParams:
    drift_allowance: float = 0.935  # k: `calibrate` on digits (10% refusals tolerated)
    decision_limit: float = 20.0  # h: ~18 failures in a row, or a long spell near the edge
    failure_score: float = 2.0  # x for a failed check: strong but bounded
    hold: int = 10  # consecutive messages at or over h before quarantine
    ceiling: float = 40.0  # C never exceeds this, so recovery after noise takes bounded time

    def __post_init__(self) -> None:
        if not (
            0 < self.drift_allowance < self.failure_score
            and 0 < self.decision_limit <= self.ceiling
            and self.hold >= 1
        ):
            raise ValueError(f"inconsistent reputation parameters: {self}")


@dataclass(frozen=True, slots=True)
class Reputation:
    cusum: float = 0.0
    messages: int = 0
    failures: int = 0
    over_limit: int = 0  # consecutive messages with cusum >= h
    state: State = "active"


def message_statistic(result: CheckResult, params: ReputationParams) -> float:
    return min(result.score, 1.0) if result.passed else params.failure_score


def update(rep: Reputation, result: CheckResult, params: ReputationParams) -> Reputation:
    """The reputation after one more checked message from the same device."""
    x = message_statistic(result, params)
    cusum = min(params.ceiling, max(0.0, rep.cusum + x - params.drift_allowance))
    over = rep.over_limit + 1 if cusum >= params.decision_limit else 0
    state: State = rep.state
    if state == "active" and over >= params.hold:
        state = "quarantined"
    return Reputation(
        cusum=cusum,
        messages=rep.messages + 1,
        failures=rep.failures + (not result.passed),
        over_limit=over,
        state=state,
    )


def should_quarantine(rep: Reputation, params: ReputationParams) -> bool:
    """True once the device has held the CUSUM at or over h for `hold` messages."""
    return rep.state == "quarantined" or rep.over_limit >= params.hold


def release(rep: Reputation) -> Reputation:
    """An admin's release: active again, evidence cleared, counts kept for the audit log."""
    return replace(rep, cusum=0.0, over_limit=0, state="active")


def calibrate(
    honest_scores: NDArray[np.float64],
    honest_passed: NDArray[np.bool_],
    *,
    tolerated_failure_rate: float = 0.1,
    base: ReputationParams | None = None,
) -> ReputationParams:
    """Set k to the mean statistic of a device that looks honest but has
    `tolerated_failure_rate` of its messages refused.

    Such a device, or one with fewer refusals (natural drift: dimmer, noisier inputs), has a
    negative CUSUM drift and practically never reaches h; one refused more often, or whose
    accepted messages crowd the band edges, climbs.
    """
    base = base or ReputationParams()
    passed = np.minimum(honest_scores[honest_passed], 1.0)
    typical = float(passed.mean()) if passed.size else 1.0
    r = tolerated_failure_rate
    k = (1 - r) * typical + r * base.failure_score
    return replace(base, drift_allowance=round(k, 3))
