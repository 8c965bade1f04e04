"""Optional k-NN tier, meant to run off the request path on a sample of accepted messages.

Mahalanobis bands describe one ellipsoid; real embeddings sit on a few class clusters with
gaps between them. The distance to the k-th nearest clean reference embedding (whitened) is
large in those gaps even where the ellipsoid says "typical". It costs a scan of the bank, so
the hub audits a sample in the background rather than delaying answers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.reference import ReferenceStats

F64 = NDArray[np.float64]
# Rows per distance block: a block holds ROWS x len(bank) float64 values (~40 MB at 5k x 1k).
ROWS = 1024


class KnnAuditor:
    def __init__(
        self,
        stats: ReferenceStats,
        bank: NDArray[np.floating],
        holdout: NDArray[np.floating],
        *,
        k: int = 5,
        target_fpr: float | None = None,
    ) -> None:
        """`bank`: clean reference embeddings; `holdout`: other clean ones, for the threshold."""
        if len(bank) <= k:
            raise ValueError(f"a bank of {len(bank)} embeddings is too small for k = {k}")
        self._w = stats.whitening
        self._bank = np.asarray(bank, np.float64) @ self._w.T
        self._bank_sq = (self._bank**2).sum(axis=1)
        self.k = k
        fpr = stats.target_fpr if target_fpr is None else target_fpr
        self.threshold = float(np.quantile(self.distances(holdout), 1 - fpr))

    def distances(self, embeddings: NDArray[np.floating]) -> F64:
        """Whitened distance from each embedding to its k-th nearest bank embedding."""
        z_all = np.asarray(embeddings, np.float64) @ self._w.T
        out = np.empty(len(z_all), dtype=np.float64)
        # In blocks: the full distance matrix of a large audit would not fit in memory.
        for start in range(0, len(z_all), ROWS):
            z = z_all[start : start + ROWS]
            squared = (z**2).sum(axis=1)[:, None] - 2 * z @ self._bank.T + self._bank_sq[None, :]
            kth = np.partition(squared, self.k - 1, axis=1)[:, self.k - 1]
            out[start : start + len(z)] = np.sqrt(np.maximum(kth, 0.0))
        return out

    def audit(self, embeddings: NDArray[np.floating]) -> NDArray[np.bool_]:
        """True where an embedding lies farther from the clean bank than the threshold."""
        return self.distances(embeddings) > self.threshold
