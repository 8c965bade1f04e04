"""Message streams per device: reputation over time, and cohort windows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.checks import CheckResult, EmbeddingChecker
from cloud_hub.poisoning.cohort import cohort_outliers
from cloud_hub.poisoning.reference import ReferenceStats
from cloud_hub.poisoning.reputation import Reputation, ReputationParams, update
from escalade.poisoning_bench.models import BundleModels, wire

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def quarantined_after(results: Sequence[CheckResult], params: ReputationParams) -> int | None:
    """Messages until quarantine (1-based), or None if the stream never triggers it."""
    rep = Reputation()
    for t, result in enumerate(results, start=1):
        rep = update(rep, result, params)
        if rep.state == "quarantined":
            return t
    return None


def drifting_device(
    models: BundleModels,
    checker: EmbeddingChecker,
    honest: F64,
    *,
    perturb: Callable[[F64, F64], F64],
    messages: int,
    rng: np.random.Generator,
) -> list[CheckResult]:
    """`messages` honest samples, message t perturbed by perturb(x, ramp) with ramp = t / messages.

    Each message goes through the single-message `check`, as on the hub.
    """
    x = honest[rng.integers(0, len(honest), messages)]
    ramp = (np.arange(1, messages + 1) / messages)[:, None]
    adv = wire(perturb(x, ramp))
    predicted = models.predict(adv)
    return [checker.check(adv[i], int(predicted[i])) for i in range(messages)]


def honest_quarantines(
    pools: Sequence[list[CheckResult]],
    *,
    devices: int,
    drifting: int,
    messages: int,
    params: ReputationParams,
    rng: np.random.Generator,
) -> int:
    """Honest devices quarantined; `drifting` of them move through pools[0] .. pools[-1]."""
    count = 0
    for device in range(devices):
        levels = len(pools) if device < drifting else 1
        rep = Reputation()
        for t in range(messages):
            pool = pools[t * levels // messages]
            rep = update(rep, pool[int(rng.integers(len(pool)))], params)
        count += rep.state == "quarantined"
    return count


def collusion(
    stats: ReferenceStats,
    honest: F64,
    offset: F64,
    *,
    honest_devices: int,
    colluders: int,
    window: int,
    threshold: float,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """(colluders flagged, honest devices flagged) by one cohort pass over window means."""
    means: dict[str, F64] = {}
    for i in range(honest_devices + colluders):
        x = honest[rng.integers(0, len(honest), window)]
        if i >= honest_devices:
            x = x + offset
        means[f"{'c' if i >= honest_devices else 'h'}{i:04d}"] = wire(x).mean(axis=0)
    flagged = {f.device_id for f in cohort_outliers(means, stats, threshold)}
    return sum(d.startswith("c") for d in flagged), sum(d.startswith("h") for d in flagged)
