"""What the bundle says a sane input and a sane embedding look like, checked on the device.

- The input domain (`escalade_protocol.input_domain`, shared with the hub's audits): an input
  outside it is answered with ``out_of_domain = true`` (or refused, by config) and run through
  the model clipped into the range, so absurd values neither overflow nor come back
  "confident".
- The embedding bands: the same reference statistics the hub's poisoning checks use
  (``calibration.npz``, digest-checked). Before escalating, the agent scores the embedding on the
  norm and Mahalanobis tiers exactly as the hub does, and on the class tier against the nearest
  class (a lower bound of the hub's score for any label it predicts). An embedding scoring above
  the hub's refusal limit stays local: no application can spend the device's reputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from escalade_protocol.artifacts import BundleError, ModelManifest, verified_path
from escalade_protocol.input_domain import InputDomain, load_input_domain

F32 = npt.NDArray[np.float32]
# The hub refuses embeddings whose score exceeds 1.25 times a band (cloud_hub reject_score).
HUB_REFUSAL_SCORE = 1.25


class EmbeddingBands:
    def __init__(self, arrays: dict[str, npt.NDArray[np.float64]]) -> None:
        self._w = np.ascontiguousarray(arrays["whitening"], dtype=np.float32)
        self._w_mean = (arrays["whitening"] @ arrays["mean"]).astype(np.float32)
        self._w_class = np.ascontiguousarray(
            arrays["class_means"] @ arrays["whitening"].T, dtype=np.float32
        )

        def scalar(key: str) -> float:
            return float(arrays[key].reshape(-1)[0])

        self._norm = (scalar("norm_low"), scalar("norm_high"))
        self._mahalanobis = (scalar("mahalanobis_low"), scalar("mahalanobis_threshold"))
        self._class_high = scalar("class_mahalanobis_high")

    def score(self, embedding: F32) -> float:
        """The hub's check score for this embedding (class tier: nearest class); inf if bad."""
        x = embedding.astype(np.float32, copy=False)
        with np.errstate(all="ignore"):
            norm = math.sqrt(float(x @ x))
            z = self._w @ x
            mahalanobis = math.sqrt(float(np.dot(z - self._w_mean, z - self._w_mean)))
            nearest = float(np.min(np.linalg.norm(z - self._w_class, axis=1)))
        if not all(map(math.isfinite, (norm, mahalanobis, nearest))) or norm <= 0:
            return math.inf
        return max(
            _ratio(norm, *self._norm),
            _ratio(mahalanobis, *self._mahalanobis),
            nearest / self._class_high,
        )

    def would_be_refused(self, embedding: F32) -> bool:
        return self.score(embedding) > HUB_REFUSAL_SCORE


def _ratio(value: float, low: float, high: float) -> float:
    return max(value / high, low / value) if value > 0 else math.inf


@dataclass(frozen=True, slots=True)
class BundleDomain:
    inputs: InputDomain | None
    bands: EmbeddingBands


def load_domain(bundle_dir: Path, manifest: ModelManifest) -> BundleDomain:
    try:
        with np.load(verified_path(bundle_dir, manifest.calibration), allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
        bands = EmbeddingBands(arrays)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"bundle {bundle_dir} has no usable embedding bands: {exc}") from None
    return BundleDomain(inputs=load_input_domain(bundle_dir, manifest), bands=bands)
