"""Detection metrics from scores: higher score = more suspicious."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def auroc(negatives: F64, positives: F64) -> float:
    """P(positive scores above negative), ties counting half (Mann-Whitney)."""
    scores = np.concatenate([negatives, positives])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(average, counts)
    n_neg, n_pos = len(negatives), len(positives)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_neg * n_pos))


def tpr_at_fpr(negatives: F64, positives: F64, fpr: float) -> float:
    """Share of positives above the negatives' (1 - fpr) quantile (higher-method, strict)."""
    threshold = np.quantile(negatives, 1 - fpr, method="higher")
    return float((positives > threshold).mean())


def percentiles_us(timings_ns: NDArray[np.int64]) -> tuple[float, float]:
    p50, p99 = np.percentile(timings_ns / 1000, [50, 99])
    return round(float(p50), 2), round(float(p99), 2)
