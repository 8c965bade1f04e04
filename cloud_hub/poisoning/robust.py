"""Robust fleet aggregates with a stated bound on what k colluding devices can do. Pure.

Every fleet-level quantity that learns from traffic takes **one point per device** (a device's
window mean, however many messages it sent: its weight is capped at 1) and aggregates them with
a coordinate-wise trimmed mean. Trimming t from each end of each coordinate; t = (n - 1) // 2
is the coordinate-wise median.

The bound is exact, not asymptotic: a trimmed mean is non-decreasing in each of its inputs, so
whatever values k <= t colluders send, each coordinate of the aggregate stays between the values
it takes when they all send -inf and when they all send +inf, both computable from the honest
points alone (`influence_bound`). With k > t the colluders can move it anywhere.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def median_trim(n: int) -> int:
    """The trim that makes the trimmed mean of n points their median."""
    return max(0, (n - 1) // 2)


def trimmed_mean(points: NDArray[np.floating], trim: int | None = None) -> F64:
    """Coordinate-wise mean of (n, d) `points` after dropping the `trim` lowest and highest
    values of each coordinate (default: the median)."""
    x = np.sort(np.asarray(points, np.float64), axis=0)
    n = len(x)
    t = median_trim(n) if trim is None else trim
    if n == 0 or not 0 <= 2 * t < n:
        raise ValueError(f"cannot trim {t} from each end of {n} points")
    return np.asarray(x[t : n - t].mean(axis=0), np.float64)


def influence_range(
    honest: NDArray[np.floating], colluders: int, trim: int | None = None
) -> tuple[F64, F64]:
    """(low, high) per coordinate: where the aggregate of `honest` plus `colluders` arbitrary
    points can land, trimming `trim` (default: the median of all n = h + k points)."""
    x = np.sort(np.asarray(honest, np.float64), axis=0)
    h, k = len(x), colluders
    t = median_trim(h + k) if trim is None else trim
    if k > t:
        inf = np.full(x.shape[1], math.inf)
        return -inf, inf
    # Colluders at +inf take the top k slots, so the t trimmed from the top are them and the
    # t - k highest honest values; at -inf, the mirror image.
    high = x[t : h - t + k].mean(axis=0)
    low = x[t - k : h - t].mean(axis=0)
    return np.asarray(low, np.float64), np.asarray(high, np.float64)


def influence_bound(honest: NDArray[np.floating], colluders: int, trim: int | None = None) -> float:
    """The largest L2 distance `colluders` extra points can move the aggregate from the honest
    points' own aggregate (each trimmed as `trimmed_mean` would); inf when they outnumber the
    trim. Attained: each coordinate can be pushed to its extreme at once."""
    low, high = influence_range(honest, colluders, trim)
    if not np.isfinite(high).all():
        return math.inf
    centre = trimmed_mean(honest, None if trim is None else min(trim, median_trim(len(honest))))
    return float(np.linalg.norm(np.maximum(high - centre, centre - low)))
