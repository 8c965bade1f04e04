"""Accuracy-vs-escalation curves, APGR and CPT (as in RouteLLM), with bootstrap weights.

A policy is a score per input (higher = more confident). Escalating the least confident first
traces accuracy from edge-only (rate 0) to hub-only (rate 1). Inputs with tied scores escalate
together, so the curve is drawn between tie groups: linear within a group, the expectation over
random tie-breaking. PGR(rate) = (accuracy - edge) / (hub - edge), clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Sorted:
    """Inputs ordered by score, with tie-group ends, ready for weighted curves."""

    order: NDArray[np.int64]
    group_ends: NDArray[np.int64]  # index (exclusive) in `order` where each tie group ends
    edge: F64  # edge correct, in score order
    hub: F64  # hub correct, in score order

    @classmethod
    def of(
        cls, scores: NDArray[np.floating], edge: NDArray[np.bool_], hub: NDArray[np.bool_]
    ) -> Sorted:
        order = np.argsort(np.asarray(scores, np.float64), kind="stable").astype(np.int64)
        s = np.asarray(scores, np.float64)[order]
        ends = np.append(np.flatnonzero(np.diff(s) != 0) + 1, len(s)).astype(np.int64)
        return cls(order, ends, edge[order].astype(np.float64), hub[order].astype(np.float64))


def curve(sorted_: Sorted, weights: F64 | None = None) -> tuple[F64, F64]:
    """(escalation rate, accuracy) at 0 and at every tie-group end."""
    w = np.ones(len(sorted_.order)) if weights is None else weights[sorted_.order]
    total = w.sum()
    gain = np.cumsum(w * (sorted_.hub - sorted_.edge))[sorted_.group_ends - 1]
    cum_w = np.cumsum(w)[sorted_.group_ends - 1]
    edge_acc = float((w * sorted_.edge).sum() / total)
    rates = np.concatenate([[0.0], cum_w / total])
    acc = np.concatenate([[edge_acc], edge_acc + gain / total])
    return rates, acc


def pgr(acc: F64, edge_acc: float, hub_acc: float) -> F64:
    gap = hub_acc - edge_acc
    if gap <= 0:
        return np.ones_like(acc)  # nothing to recover
    return np.asarray(np.clip((acc - edge_acc) / gap, 0.0, 1.0), np.float64)


def apgr(rates: F64, acc: F64) -> float:
    """Area under the PGR curve over escalation rate 0..1 (trapezoids)."""
    p = pgr(acc, float(acc[0]), float(acc[-1]))
    return float(np.sum((rates[1:] - rates[:-1]) * (p[1:] + p[:-1]) / 2.0))


def cpt(rates: F64, acc: F64, share: float) -> float:
    """Least escalation rate at which the curve recovers `share` of the gap."""
    p = pgr(acc, float(acc[0]), float(acc[-1]))
    hit = np.flatnonzero(p >= share - 1e-12)
    if len(hit) == 0:
        return 1.0
    i = int(hit[0])
    if i == 0:
        return 0.0
    # Linear between the two points that straddle the share.
    lo, hi = p[i - 1], p[i]
    t = 0.0 if hi == lo else (share - lo) / (hi - lo)
    return float(rates[i - 1] + t * (rates[i] - rates[i - 1]))


def on_grid(rates: F64, acc: F64, grid: F64) -> F64:
    return np.asarray(np.interp(grid, rates, acc), np.float64)
