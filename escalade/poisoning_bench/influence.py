"""Colluding groups against the fleet statistics that learn from traffic: the largest shift an
optimising attacker finds, next to the bound the code claims (`robust.influence_bound`).

What learns from traffic today is one thing: the cohort sweep's fleet centre, a coordinate-wise
median of one whitened window mean per device (`cohort.py`). Everything else a device could
hope to move is fixed when the bundle is built and never updated from traffic: the reference
statistics and their bands, the escalated-traffic mean (`hard_mean`), the k-NN bank and its
threshold; reputation parameters are fleet policy, set by an administrator. Those get rows
that say so, with a bound of 0 and nothing to measure.

Two attackers per group size, both maximising the L2 shift of the centre (whitened units):
- unconstrained: any k points. A trimmed mean is monotone in each input, so pushing every
  coordinate to whichever extreme moves it more is optimal; a black-box random search from
  there and from random starts checks that nothing beats it (it must never beat the bound);
- in band: each colluder's window mean is the mean of messages the hub accepts, at most 10% of
  them over the clean band (the share reputation tolerates, `calibrate`): honest messages plus
  one shared offset, scaled by line search to the largest that stays in band, along the
  unconstrained optimum's direction and toward another class's mean.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from cloud_hub.escalation.cohort_watch import CohortWatch
from cloud_hub.poisoning.checks import EmbeddingChecker
from cloud_hub.poisoning.cohort import cohort_outliers
from cloud_hub.poisoning.robust import influence_bound, influence_range, trimmed_mean
from escalade.poisoning_bench.models import BundleModels, wire
from escalade.poisoning_bench.report import InfluenceRow

F64 = NDArray[np.float64]
GROUPS = (2, 5, 10)
FLEET_CENTRE = "cohort fleet centre (median of device window means)"
STATIC = (
    "reference bands and hard_mean (build time)",
    "k-NN bank and threshold (build time)",
    "reputation parameters (fleet policy)",
)
TOLERATED_FAILURES = 0.1  # reputation's calibrated allowance: more refusals climb the CUSUM
SEARCH_STEPS = 300


def _shift(honest: F64, colluders: F64) -> float:
    """How far `colluders` move the median of the honest points (L2)."""
    base = trimmed_mean(honest)
    return float(np.linalg.norm(trimmed_mean(np.concatenate([honest, colluders])) - base))


def extreme_points(honest: F64, k: int) -> F64:
    """The optimum: every colluder beyond the honest range, each coordinate on the side where
    the median moves more (`influence_range` says how far each side goes)."""
    low, high = influence_range(honest, k)
    base = trimmed_mean(honest)
    span = float(np.abs(honest).max()) + 10.0
    side = np.where(high - base >= base - low, span, -span)
    return np.tile(side, (k, 1))


def search(honest: F64, k: int, rng: np.random.Generator) -> float:
    """Black-box random search over k points, from the optimum and from random starts."""
    scale = float(honest.std())
    best = 0.0
    starts = [extreme_points(honest, k), honest[rng.integers(0, len(honest), k)]]
    for start in starts:
        points, value = start.copy(), _shift(honest, start)
        for i in range(SEARCH_STEPS):
            step = 4 * scale * (1 - i / SEARCH_STEPS) + 1e-3
            trial = points + step * rng.standard_normal(points.shape)
            trial_value = _shift(honest, trial)
            if trial_value > value:
                points, value = trial, trial_value
        best = max(best, value)
    return best


class FleetCentreAttack:
    """Honest devices' window means, and colluders whose messages the hub would accept."""

    def __init__(
        self,
        models: BundleModels,
        checker: EmbeddingChecker,
        honest: F64,
        *,
        honest_devices: int,
        rng: np.random.Generator,
    ) -> None:
        self.models, self.checker, self.rng = models, checker, rng
        stats = checker.stats
        self.w = stats.whitening
        watch = CohortWatch(stats)
        self.window = watch.min_messages
        self.threshold = watch.spread_factor * math.sqrt(stats.dim / self.window)
        self.honest = honest
        self.honest_means = np.stack(
            [self._window(np.zeros(stats.dim)) for _ in range(honest_devices)]
        )
        self.z = self.honest_means @ self.w.T

    def _messages(self, offset: F64) -> F64:
        x = self.honest[self.rng.integers(0, len(self.honest), self.window)] + offset
        return np.asarray(wire(x), np.float64)

    def _window(self, offset: F64) -> F64:
        return np.asarray(self._messages(offset).mean(axis=0), np.float64)

    def _in_band(self, offset: F64) -> tuple[bool, F64]:
        """(acceptable, window mean of the accepted messages) for one colluder's window."""
        x = self._messages(offset)
        scores = self.checker.check_batch(x, self.models.predict(x))
        passed = scores.passed
        if not passed.any():
            return False, x.mean(axis=0)
        return bool(1 - passed.mean() <= TOLERATED_FAILURES), x[passed].mean(axis=0)

    def _largest_in_band(self, direction: F64, k: int) -> F64:
        """k colluder window means, offset along `direction` (embedding space) as far as a
        bisection keeps every colluder in band."""
        unit = direction / np.linalg.norm(direction)
        low, high = 0.0, 4.0 * float(np.linalg.norm(self.honest, axis=1).mean())
        for _ in range(12):
            mid = (low + high) / 2
            if all(self._in_band(mid * unit)[0] for _ in range(k)):
                low = mid
            else:
                high = mid
        return np.stack([self._in_band(low * unit)[1] for _ in range(k)])

    def rows(self) -> list[InfluenceRow]:
        stats = self.checker.stats
        rows = []
        for k in GROUPS:
            extreme = extreme_points(self.z, k)
            unconstrained = max(_shift(self.z, extreme), search(self.z, k, self.rng))
            # The optimum's direction, back in embedding space; and a class-mean offset.
            toward = np.linalg.solve(self.w, extreme[0] / np.linalg.norm(extreme[0]))
            source, target = self.rng.choice(stats.num_classes, 2, replace=False)
            offset = stats.class_means[target] - stats.class_means[source]
            best_shift, best_means = -1.0, self.honest_means[:0]
            for direction in (toward, offset):
                means = self._largest_in_band(direction, k)
                value = _shift(self.z, means @ self.w.T)
                if value > best_shift:
                    best_shift, best_means = value, means
            # The baseline: the same colluders against a plain mean of the device means.
            z_all = np.concatenate([self.z, best_means @ self.w.T])
            plain = float(np.linalg.norm(z_all.mean(axis=0) - self.z.mean(axis=0)))
            fleet = {f"h{i:04d}": m for i, m in enumerate(self.honest_means)}
            fleet |= {f"c{i:04d}": m for i, m in enumerate(best_means)}
            flagged = {f.device_id for f in cohort_outliers(fleet, stats, self.threshold)}
            rows.append(
                InfluenceRow(
                    statistic=FLEET_CENTRE,
                    learns_from_traffic=True,
                    colluders=k,
                    honest_devices=len(self.z),
                    bound=round(influence_bound(self.z, k), 4),
                    measured_unconstrained=round(unconstrained, 4),
                    measured_in_band=round(best_shift, 4),
                    plain_mean_in_band=round(plain, 4),
                    honest_flagged=sum(d.startswith("h") for d in flagged),
                    colluders_flagged=sum(d.startswith("c") for d in flagged),
                )
            )
        rows.extend(
            InfluenceRow(
                statistic=name,
                learns_from_traffic=False,
                colluders=k,
                honest_devices=len(self.z),
                bound=0.0,
            )
            for name in STATIC
            for k in GROUPS
        )
        return rows
