"""Judging one reveal (pure): does the revealed input match the commitment, and does the
model's encoder, run on it, give the embedding the device sent?"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class AuditOutcome(enum.StrEnum):
    PASSED = "passed"
    # The revealed salt and input do not hash to the commitment the device signed.
    COMMITMENT_MISMATCH = "commitment_mismatch"
    # They do, but the encoder turns that input into another embedding than the one sent.
    ENCODING_MISMATCH = "encoding_mismatch"
    # The revealed input is not an input of this model (shape, dtype, non-finite values).
    BAD_INPUT = "bad_input"
    # No reveal came before the deadline.
    NO_REVEAL = "no_reveal"


@dataclass(frozen=True, slots=True)
class RevealVerdict:
    outcome: AuditOutcome
    # Relative L2 distance between the sent and the re-encoded embedding (None: not compared).
    distance: float | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is AuditOutcome.PASSED


def relative_distance(sent: F32, reencoded: F32) -> float:
    scale = max(float(np.linalg.norm(reencoded)), 1e-12)
    return float(np.linalg.norm(sent.astype(np.float64) - reencoded.astype(np.float64)) / scale)


def judge_reveal(
    *,
    committed: bytes,
    recomputed: bytes,
    sent: F32,
    reencoded: F32 | None,
    tolerance: float,
) -> RevealVerdict:
    if not hmac.compare_digest(committed, recomputed):
        return RevealVerdict(AuditOutcome.COMMITMENT_MISMATCH)
    if reencoded is None:
        return RevealVerdict(AuditOutcome.BAD_INPUT)
    distance = relative_distance(sent, reencoded)
    if not distance <= tolerance:  # also refuses nan
        return RevealVerdict(AuditOutcome.ENCODING_MISMATCH, distance)
    return RevealVerdict(AuditOutcome.PASSED, distance)
