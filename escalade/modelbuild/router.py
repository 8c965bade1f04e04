"""Choosing the edge router's threshold on the calibration split, and the cascade it implies.

A threshold escalates every input whose signal (higher = more confident) is below it. The
candidates are the observed signal values plus one value above them all (escalate everything):
a threshold between two observed values behaves like the next one up on this split.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.router import SignalName, signal_matrix
from escalade_protocol.artifacts import RouterCalibration

Target = Literal["match_hub", "accuracy", "escalation_budget"]

# The cascade may give up at most half a point of hub accuracy on the calibration split.
ACCURACY_TOLERANCE = 0.005


def cascade(
    edge_probs: NDArray[np.floating], hub_probs: NDArray[np.floating], threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Predictions when answering locally at max probability >= threshold; escalated mask."""
    escalated = edge_probs.max(axis=1) < threshold
    predictions = np.where(escalated, hub_probs.argmax(axis=1), edge_probs.argmax(axis=1))
    return predictions.astype(np.int64), escalated


def threshold_curve(
    scores: NDArray[np.floating],
    edge_correct: NDArray[np.bool_],
    hub_correct: NDArray[np.bool_],
    *,
    top: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(thresholds ascending, accuracy, escalation rate) for every candidate threshold."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    n = len(s)
    # gain[k] = accuracy change from escalating the k least confident inputs.
    gain = np.concatenate(
        [[0], np.cumsum(hub_correct[order].astype(np.int64) - edge_correct[order])]
    )
    above = top if top is not None else float(np.nextafter(sorted_scores[-1], np.inf))
    thresholds = np.unique(np.append(sorted_scores, above))
    k = np.searchsorted(sorted_scores, thresholds, side="left")
    accuracy = (edge_correct.sum() + gain[k]) / n
    return thresholds, accuracy.astype(np.float64), (k / n).astype(np.float64)


def calibrate_threshold(
    scores: NDArray[np.floating],
    edge_pred: NDArray[np.integer],
    hub_pred: NDArray[np.integer],
    y: NDArray[np.integer],
    *,
    signal: SignalName,
    target: Target = "match_hub",
    target_value: float | None = None,
) -> RouterCalibration:
    """The threshold meeting `target` on this split with the least escalation.

    - match_hub: accuracy >= hub accuracy - target_value (default ACCURACY_TOLERANCE);
    - accuracy: accuracy >= target_value;
    - escalation_budget: the best accuracy escalating at most target_value of inputs.
    When no threshold meets an accuracy goal, the one escalating everything is returned.
    """
    edge_correct = np.asarray(edge_pred) == y
    hub_correct = np.asarray(hub_pred) == y
    top = 1.0 if signal == "max_probability" else None
    thresholds, accuracy, rate = threshold_curve(scores, edge_correct, hub_correct, top=top)
    if target == "escalation_budget":
        if target_value is None:
            raise ValueError("an escalation budget needs target_value")
        allowed = rate <= target_value + 1e-12
        best = float(np.max(accuracy[allowed]))
        i = int(np.flatnonzero(allowed & (accuracy >= best))[0])
    else:
        if target == "match_hub":
            tolerance = ACCURACY_TOLERANCE if target_value is None else target_value
            goal = float(hub_correct.mean()) - tolerance
        elif target == "accuracy" and target_value is not None:
            goal = target_value
        else:
            raise ValueError(f"unknown target {target!r} or missing target_value")
        # Ascending thresholds escalate more and more: the first that qualifies is the answer.
        meets = np.flatnonzero(accuracy >= goal - 1e-12)
        i = int(meets[0]) if len(meets) else len(thresholds) - 1
    return RouterCalibration(
        signal=signal,
        threshold=float(thresholds[i]),
        expected_accuracy=float(accuracy[i]),
        expected_escalation_rate=float(rate[i]),
        expected_miss_rate=miss_rate(scores, edge_pred, hub_pred, float(thresholds[i])),
        target=target,
        target_value=target_value,
    )


def miss_rate(
    scores: NDArray[np.floating],
    edge_pred: NDArray[np.integer],
    hub_pred: NDArray[np.integer],
    threshold: float,
) -> float:
    """Share of inputs answered locally whose hub answer differs (the online router's target)."""
    local = np.asarray(scores) >= threshold
    return float((local & (np.asarray(edge_pred) != hub_pred)).mean())


def calibrate_router(
    edge_probs: NDArray[np.floating],
    hub_probs: NDArray[np.floating],
    y: NDArray[np.int64],
    *,
    signal: SignalName = "max_probability",
    scores: NDArray[np.floating] | None = None,
    target: Target = "match_hub",
    target_value: float | None = None,
) -> RouterCalibration:
    """Calibrate on head and hub probabilities; `scores` is needed for signal "learned"."""
    if scores is None:
        if signal == "learned":
            raise ValueError("signal 'learned' needs the router model's scores")
        scores = signal_matrix(edge_probs)[signal]
    return calibrate_threshold(
        scores,
        edge_probs.argmax(axis=1),
        hub_probs.argmax(axis=1),
        y,
        signal=signal,
        target=target,
        target_value=target_value,
    )
