"""Per-check latency, at the bundle's dimension and at d = 384 with synthetic statistics."""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.checks import EmbeddingChecker
from cloud_hub.poisoning.reference import ReferenceStats
from escalade.modelbuild.stats import embedding_statistics
from escalade.poisoning_bench.metrics import percentiles_us
from escalade.poisoning_bench.report import Latency

F32 = NDArray[np.float32]


def time_checks(checker: EmbeddingChecker, embeddings: F32, classes: NDArray[np.int64]) -> Latency:
    for i in range(min(100, len(embeddings))):  # warm caches and the allocator
        checker.check(embeddings[i], int(classes[i]))
    timings = np.empty(len(embeddings), dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(len(embeddings)):
        started = clock()
        checker.check(embeddings[i], int(classes[i]))
        timings[i] = clock() - started
    p50, p99 = percentiles_us(timings)
    return Latency(p50=p50, p99=p99, dim=int(embeddings.shape[1]))


def synthetic(dim: int, samples: int, rng: np.random.Generator) -> tuple[ReferenceStats, F32]:
    """Reference statistics built by the real builder from correlated Gaussian clusters;
    returns them with held-out samples to time (most pass every tier: the slowest path)."""
    classes = 10
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, 3 * samples).astype(np.int64)
    x = (rng.standard_normal((3 * samples, dim)) @ mixing + centres[y]).astype(np.float32)
    arrays = embedding_statistics(
        x[:samples],
        y[:samples],
        threshold_embedding=x[samples : 2 * samples],
        threshold_labels=y[samples : 2 * samples],
    )
    return ReferenceStats.from_arrays(arrays), x[2 * samples :]
