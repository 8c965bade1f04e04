"""The edge router's threshold on the head's max probability, and the cascade it implies."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from escalade_protocol.artifacts import RouterCalibration

# The cascade may give up at most half a point of hub accuracy on the calibration split.
ACCURACY_TOLERANCE = 0.005


def cascade(
    edge_probs: NDArray[np.floating], hub_probs: NDArray[np.floating], threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Predictions when answering locally at max probability >= threshold; escalated mask."""
    escalated = edge_probs.max(axis=1) < threshold
    predictions = np.where(escalated, hub_probs.argmax(axis=1), edge_probs.argmax(axis=1))
    return predictions.astype(np.int64), escalated


def calibrate_router(
    edge_probs: NDArray[np.floating], hub_probs: NDArray[np.floating], y: NDArray[np.int64]
) -> RouterCalibration:
    """The threshold escalating least while keeping accuracy >= hub accuracy - tolerance.

    Candidates are the observed max probabilities (each one moves a single example across) and
    1.0; thresholds between two observed values behave like the next one up on this split.
    """
    target = float((hub_probs.argmax(axis=1) == y).mean()) - ACCURACY_TOLERANCE
    candidates = np.unique(np.append(edge_probs.max(axis=1).astype(np.float64), 1.0))
    best: RouterCalibration | None = None
    # Ascending thresholds escalate more and more, so the first that qualifies is the answer.
    for threshold in candidates:
        predictions, escalated = cascade(edge_probs, hub_probs, float(threshold))
        accuracy = float((predictions == y).mean())
        best = RouterCalibration(
            threshold=float(threshold),
            expected_accuracy=accuracy,
            expected_escalation_rate=float(escalated.mean()),
        )
        if accuracy >= target:
            break
    # Falls through to threshold 1.0, the most the router can escalate, if nothing qualified.
    assert best is not None
    return best
