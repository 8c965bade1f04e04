"""The range of inputs a model bundle accepts, as both the device and the hub read it.

The range of the calibration split's raw inputs, widened by a tenth of its width on each side
(digits: pixels 0-16 -> [-1.6, 17.6]). The agent answers inputs outside it as out of domain;
the hub refuses an audit reveal outside it (an input no sensor of this model produces).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from escalade_protocol.artifacts import ModelManifest, verified_path

F32 = npt.NDArray[np.float32]
DOMAIN_SLACK = 0.1


@dataclass(frozen=True, slots=True)
class InputDomain:
    low: float
    high: float

    def contains(self, features: F32) -> bool:
        return bool(np.all((features >= self.low) & (features <= self.high)))

    def clip(self, features: F32) -> F32:
        return np.clip(features, self.low, self.high).astype(np.float32, copy=False)


def load_input_domain(bundle_dir: Path, manifest: ModelManifest) -> InputDomain | None:
    """The bundle's input domain; None for a bundle without a calibration split."""
    if manifest.calibration_split is None:
        return None
    with np.load(verified_path(bundle_dir, manifest.calibration_split), allow_pickle=False) as data:
        X = np.asarray(data["X"], dtype=np.float64)
    low, high = float(X.min()), float(X.max())
    slack = DOMAIN_SLACK * max(high - low, 1e-6)
    return InputDomain(low - slack, high + slack)
