"""Local answer or escalation: a pure decision over the local head's output."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt


class Reason(StrEnum):
    CONFIDENT = "confident"
    UNCERTAIN = "uncertain"
    FORCED_LOCAL = "forced_local"
    FORCED_HUB = "forced_hub"


@dataclass(frozen=True, slots=True)
class Decision:
    escalate: bool
    reason: Reason
    confidence: float


def decide(probabilities: npt.NDArray[np.float32], *, threshold: float, route: str) -> Decision:
    """Escalate when the head's top probability is below `threshold` (or when forced)."""
    confidence = float(np.max(probabilities))
    if route == "local":
        return Decision(escalate=False, reason=Reason.FORCED_LOCAL, confidence=confidence)
    if route == "hub":
        return Decision(escalate=True, reason=Reason.FORCED_HUB, confidence=confidence)
    if confidence >= threshold:
        return Decision(escalate=False, reason=Reason.CONFIDENT, confidence=confidence)
    return Decision(escalate=True, reason=Reason.UNCERTAIN, confidence=confidence)
