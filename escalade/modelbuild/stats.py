"""Statistics of clean calibration embeddings, for the hub's checks of what it receives."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def embedding_statistics(embedding: NDArray[np.floating], y: NDArray[np.int64]) -> dict[str, F64]:
    """Mean, shrunk covariance and its inverse, class means, norm and Mahalanobis bounds."""
    from sklearn.covariance import LedoitWolf

    e = embedding.astype(np.float64)
    num_classes = int(y.max()) + 1
    # Ledoit-Wolf shrinkage: a few hundred samples in 32 dimensions make the plain estimate
    # poorly conditioned, and the hub needs a stable inverse.
    covariance = np.asarray(LedoitWolf().fit(e).covariance_, dtype=np.float64)
    covariance = (covariance + covariance.T) / 2
    precision = np.linalg.inv(covariance)
    precision = (precision + precision.T) / 2
    mean = e.mean(axis=0)
    centred = e - mean
    mahalanobis = np.sqrt(np.einsum("ij,jk,ik->i", centred, precision, centred))
    norms = np.linalg.norm(e, axis=1)
    class_means = np.stack([e[y == c].mean(axis=0) for c in range(num_classes)])
    return {
        "mean": mean,
        "covariance": covariance,
        "precision": precision,
        "class_means": class_means,
        "norm_low": np.asarray(np.percentile(norms, 0.5), dtype=np.float64),
        "norm_high": np.asarray(np.percentile(norms, 99.5), dtype=np.float64),
        "mahalanobis_threshold": np.asarray(np.percentile(mahalanobis, 99.0), dtype=np.float64),
    }
