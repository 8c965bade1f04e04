"""Reference statistics of clean embeddings for one model version, as shipped in the bundle.

Built by `escalade.modelbuild.stats` into `calibration.npz`. They are read once and never
updated from live traffic: statistics that learn from what devices send could be walked away
from the clean distribution by a patient attacker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
log = logging.getLogger(__name__)


class ReferenceStatsError(Exception):
    """The calibration file is missing keys or holds inconsistent shapes."""


_MATRICES = ("mean", "precision", "whitening", "class_means")
_SCALARS = (
    "norm_low",
    "norm_high",
    "mahalanobis_low",
    "mahalanobis_threshold",
    "class_mahalanobis_high",
    "target_fpr",
)
# The reflection tier's discriminator (hidden layer, log-odds layer) and its edge: added later,
# so a bundle built before it still loads, with the tier off (and a warning naming the fix).
_REFLECTION = ("reflection_w0", "reflection_b0", "reflection_w1", "reflection_b1")
REBUILD = "escalade models build --dataset DATASET --out DIR"


@dataclass(frozen=True, eq=False)
class Reflection:
    """A one-hidden-layer MLP whose output is the log-odds that x is a sign-flipped embedding."""

    w0: F64  # (d, h)
    b0: F64  # (h,)
    w1: F64  # (h,)
    b1: float
    high: float  # upper edge on the odds exp(log-odds), after conformal scaling


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Fitted on clean embeddings; band edges set on held-back ones for `target_fpr`."""

    mean: F64  # (d,)
    precision: F64  # (d, d)
    whitening: F64  # (d, d), whitening.T @ whitening == precision
    class_means: F64  # (C, d)
    norm_low: float
    norm_high: float
    mahalanobis_low: float
    mahalanobis_high: float
    class_mahalanobis_high: float
    target_fpr: float
    reflection: Reflection | None = None  # None: a bundle built before the reflection tier
    # Mean of the embeddings routers escalate (the hub's traffic); None: an older bundle.
    hard_mean: F64 | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.class_means.shape[0])

    @classmethod
    def load(cls, path: Path) -> ReferenceStats:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
        except (OSError, ValueError) as exc:
            raise ReferenceStatsError(f"cannot read {path}: {exc}") from exc
        missing = [k for k in (*_MATRICES, *_SCALARS) if k not in arrays]
        if missing:
            raise ReferenceStatsError(
                f"{path} lacks {', '.join(missing)}: rebuild the bundle with this version "
                f"({REBUILD})"
            )
        return cls.from_arrays(arrays)

    @classmethod
    def from_arrays(cls, arrays: dict[str, F64]) -> ReferenceStats:
        def scalar(key: str) -> float:
            return float(arrays[key].reshape(-1)[0])

        reflection = None
        if all(k in arrays for k in (*_REFLECTION, "reflection_high")):
            reflection = Reflection(
                w0=np.ascontiguousarray(arrays["reflection_w0"]),
                b0=np.ascontiguousarray(arrays["reflection_b0"]),
                w1=np.ascontiguousarray(arrays["reflection_w1"]),
                b1=scalar("reflection_b1"),
                high=scalar("reflection_high"),
            )
        else:
            log.warning(
                "reference statistics lack the reflection tier: sign-flipped embeddings will "
                "pass; rebuild the bundle (%s)",
                REBUILD,
            )
        stats = cls(
            mean=np.ascontiguousarray(arrays["mean"]),
            precision=np.ascontiguousarray(arrays["precision"]),
            whitening=np.ascontiguousarray(arrays["whitening"]),
            class_means=np.ascontiguousarray(arrays["class_means"]),
            norm_low=scalar("norm_low"),
            norm_high=scalar("norm_high"),
            mahalanobis_low=scalar("mahalanobis_low"),
            mahalanobis_high=scalar("mahalanobis_threshold"),
            class_mahalanobis_high=scalar("class_mahalanobis_high"),
            target_fpr=scalar("target_fpr"),
            reflection=reflection,
            hard_mean=np.ascontiguousarray(arrays["hard_mean"]) if "hard_mean" in arrays else None,
        )
        stats.validate()
        return stats

    def validate(self) -> None:
        d = self.dim
        if self.mean.shape != (d,) or self.class_means.ndim != 2 or self.class_means.shape[1] != d:
            raise ReferenceStatsError("mean and class_means disagree on the dimension")
        if self.precision.shape != (d, d) or self.whitening.shape != (d, d):
            raise ReferenceStatsError(f"precision and whitening must be {d}x{d}")
        if not np.allclose(self.whitening.T @ self.whitening, self.precision, rtol=1e-6, atol=1e-8):
            raise ReferenceStatsError("whitening.T @ whitening differs from the precision")
        edges = (self.norm_low, self.norm_high, self.mahalanobis_low, self.mahalanobis_high)
        if not (
            0 <= self.norm_low < self.norm_high
            and 0 <= self.mahalanobis_low < self.mahalanobis_high
            and self.class_mahalanobis_high > 0
            and all(np.isfinite(edges))
        ):
            raise ReferenceStatsError("band edges are not ordered, positive and finite")
        if self.hard_mean is not None and self.hard_mean.shape != (d,):
            raise ReferenceStatsError("hard_mean disagrees with the dimension")
        r = self.reflection
        if r is not None:
            h = r.b0.shape[0] if r.b0.ndim == 1 else -1
            if r.w0.shape != (d, h) or r.w1.shape != (h,):
                raise ReferenceStatsError(f"the reflection layers must be {d}xh, h and h")
            if not (r.high > 0 and np.isfinite(r.high)):
                raise ReferenceStatsError("the reflection edge is not positive and finite")
