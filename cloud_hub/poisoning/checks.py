"""Per-request poisoning tiers, cheapest first, after the pipeline's structural checks.

1. norm within [norm_low, norm_high]                        reason "norm"
2. global Mahalanobis within [mahalanobis_low, high]         reason "mahalanobis"
3. Mahalanobis to the predicted class's mean <= class high   reason "class_mahalanobis"
4. odds that x is a sign-flipped embedding <= reflection high reason "reflection"

Tiers 1-3 are symmetric about the mean (and encoders centre their output), so x -> -x passes
them; tier 4, a small discriminator trained at build time against mirror images, is not.
It costs one (d x 64) matrix-vector product; bundles built before it run tiers 1-3 only.

All distances share one precision, pre-whitened: z = W x costs one matrix-vector product, and
then each distance is the norm of a difference with a precomputed W mu. The score is the
largest band ratio over the tiers computed: max(v / high, low / v); it is <= 1 exactly when a
check passes, is comparable across tiers and models, and feeds the reputation tracker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.reference import ReferenceStats

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

NORM = "norm"
MAHALANOBIS = "mahalanobis"
CLASS_MAHALANOBIS = "class_mahalanobis"
REFLECTION = "reflection"
_TIERS = (NORM, MAHALANOBIS, CLASS_MAHALANOBIS, REFLECTION)
_MAX_LOG_ODDS = 30.0  # as at build time: beyond it a vector is a reflection either way


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    reason: str | None  # the first tier that failed
    score: float  # max band ratio over the tiers computed; > 1 iff failed
    norm: float
    mahalanobis: float  # nan where an earlier tier failed
    class_mahalanobis: float  # nan where an earlier tier failed
    reflection: float = math.nan  # odds of a sign flip; nan: earlier failure, or tier off


@dataclass(frozen=True, slots=True)
class TierScores:
    """Every tier for a batch, without early exit: for benchmarks and audits."""

    norm: F64
    mahalanobis: F64
    class_mahalanobis: F64
    reflection: F64  # nan where the tier is off
    ratios: F64  # (4, n): band ratio per tier, in tier order (0 where a tier is off)
    score: F64  # max over all tiers (a sharper ranking than the early-exit score)
    passed: NDArray[np.bool_]

    def result(self, i: int) -> CheckResult:
        """Message i as `check` would report it (score up to the first failing tier)."""
        failing = np.flatnonzero(self.ratios[:, i] > 1)
        last = int(failing[0]) if failing.size else len(_TIERS) - 1
        values = [
            float(self.norm[i]),
            float(self.mahalanobis[i]),
            float(self.class_mahalanobis[i]),
            float(self.reflection[i]),
        ]
        values[last + 1 :] = [math.nan] * (len(_TIERS) - 1 - last)
        score = float(self.ratios[: last + 1, i].max())
        reason = _TIERS[last] if failing.size else None
        return CheckResult(reason is None, reason, score, *values)


def _ratio(value: float, low: float, high: float) -> float:
    return max(value / high, low / value) if value > 0 else math.inf


class EmbeddingChecker:
    def __init__(self, stats: ReferenceStats) -> None:
        self.stats = stats
        # float32 halves the bytes the matrix-vector product streams (p99 at d = 384: ~22 us
        # instead of ~70 us); distances of a few units lose nothing that matters at 1e-6.
        self._w = np.ascontiguousarray(stats.whitening, dtype=np.float32)
        self._w_mean = (stats.whitening @ stats.mean).astype(np.float32)
        self._w_class = np.ascontiguousarray(stats.class_means @ stats.whitening.T, np.float32)
        s = stats
        self._norm = (s.norm_low, s.norm_high)
        self._mahalanobis = (s.mahalanobis_low, s.mahalanobis_high)
        self._class_high = s.class_mahalanobis_high
        r = s.reflection
        self._reflection = (
            None
            if r is None
            else (
                np.ascontiguousarray(r.w0.T, np.float32),  # (h, d): one row per hidden unit
                r.b0.astype(np.float32),
                r.w1.astype(np.float32),
                r.b1,
                r.high,
            )
        )

    def _odds(self, x: NDArray[np.float32]) -> float:
        assert self._reflection is not None
        w0t, b0, w1, b1, _ = self._reflection
        hidden = w0t @ x + b0
        log_odds = float(np.maximum(hidden, 0, out=hidden) @ w1) + b1
        return math.exp(min(max(log_odds, -_MAX_LOG_ODDS), _MAX_LOG_ODDS))

    def check(self, embedding: NDArray[np.float32], predicted_class: int) -> CheckResult:
        """`embedding`: finite, shape (d,), as the pipeline validated it."""
        x = embedding.astype(np.float32, copy=False)
        norm = math.sqrt(float(x @ x))
        score = _ratio(norm, *self._norm)
        nan = math.nan
        if score > 1:
            return CheckResult(False, NORM, score, norm, nan, nan)
        z = self._w @ x
        d = z - self._w_mean
        mahalanobis = math.sqrt(float(d @ d))
        score = max(score, _ratio(mahalanobis, *self._mahalanobis))
        if score > 1:
            return CheckResult(False, MAHALANOBIS, score, norm, mahalanobis, nan)
        d = z - self._w_class[predicted_class]
        class_mahalanobis = math.sqrt(float(d @ d))
        score = max(score, class_mahalanobis / self._class_high)
        if score > 1:
            return CheckResult(
                False, CLASS_MAHALANOBIS, score, norm, mahalanobis, class_mahalanobis
            )
        if self._reflection is None:
            return CheckResult(True, None, score, norm, mahalanobis, class_mahalanobis)
        odds = self._odds(x)
        score = max(score, odds / self._reflection[4])
        reason = REFLECTION if score > 1 else None
        return CheckResult(
            reason is None, reason, score, norm, mahalanobis, class_mahalanobis, odds
        )

    def check_batch(
        self, embeddings: NDArray[np.floating], predicted: NDArray[np.int64]
    ) -> TierScores:
        x = embeddings.astype(np.float32)
        z = x @ self._w.T
        norm = np.linalg.norm(x, axis=1).astype(np.float64)
        mahalanobis = np.linalg.norm(z - self._w_mean, axis=1).astype(np.float64)
        class_mahalanobis = np.linalg.norm(z - self._w_class[predicted], axis=1).astype(np.float64)
        n = len(x)
        if self._reflection is None:
            reflection, reflection_ratio = np.full(n, math.nan), np.zeros(n)
        else:
            w0t, b0, w1, b1, high = self._reflection
            log_odds = (np.maximum(x @ w0t.T + b0, 0) @ w1).astype(np.float64) + b1
            reflection = np.exp(np.clip(log_odds, -_MAX_LOG_ODDS, _MAX_LOG_ODDS))
            reflection_ratio = reflection / high
        with np.errstate(divide="ignore"):
            ratios = np.stack(
                [
                    np.maximum(norm / self._norm[1], self._norm[0] / norm),
                    np.maximum(
                        mahalanobis / self._mahalanobis[1], self._mahalanobis[0] / mahalanobis
                    ),
                    class_mahalanobis / self._class_high,
                    reflection_ratio,
                ]
            )
        score = ratios.max(axis=0)
        return TierScores(
            norm, mahalanobis, class_mahalanobis, reflection, ratios, score, score <= 1
        )
