"""The k-NN audit on live traffic: a sample of accepted embeddings, checked off the request path.

The Mahalanobis bands describe one ellipsoid; real embeddings sit on a few class clusters with
gaps between them, where a forged vector can look typical to the ellipsoid. The k-NN auditor
(`cloud_hub.poisoning.knn`) measures the distance to the k-th nearest clean reference embedding
instead, at the price of a scan of the bank — too slow for the request path, so a sample of
accepted messages is kept (`observe`, on the loop: one random draw) and checked in batches by a
periodic job on a worker thread (`take` on the loop, `check` pure). A flag goes to the audit log
for an operator, like a cohort flag: it does not quarantine.

The clean bank is the bundle's own calibration split run through its encoder: half of it is
the bank, the other half sets the threshold at the reference statistics' false-positive rate.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud_hub.audits.reencoder import Reencoder
from cloud_hub.poisoning import ReferenceStats
from cloud_hub.poisoning.knn import KnnAuditor
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.tensor import Tensor

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class KnnFlag:
    device_id: uuid.UUID
    distance: float


@dataclass(slots=True)
class KnnWatch:
    auditor: KnnAuditor
    # Share of accepted messages sampled for the audit.
    rate: float = 0.02
    # At most this many samples wait between checks (a flood is sampled, not queued).
    max_pending: int = 4096
    rng: random.Random = field(default_factory=random.Random)
    _pending: list[tuple[uuid.UUID, F32]] = field(default_factory=list)

    def observe(self, device_id: uuid.UUID, embedding: F32) -> None:
        if self.rng.random() < self.rate and len(self._pending) < self.max_pending:
            self._pending.append((device_id, embedding))

    def take(self) -> list[tuple[uuid.UUID, F32]]:
        taken, self._pending = self._pending, []
        return taken

    def check(self, taken: list[tuple[uuid.UUID, F32]]) -> list[KnnFlag]:
        """The sampled embeddings farther from the clean bank than the threshold. Pure."""
        if not taken:
            return []
        distances = self.auditor.distances(np.stack([e for _, e in taken]))
        return [
            KnnFlag(device_id, float(d))
            for (device_id, _), d in zip(taken, distances, strict=True)
            if d > self.auditor.threshold
        ]


def bundle_knn_auditor(bundle_dir: Path, stats: ReferenceStats) -> KnnAuditor | None:
    """The auditor over the bundle's calibration split; None if the bundle has none."""
    manifest = load_manifest(bundle_dir)
    if manifest.calibration_split is None:
        return None
    with np.load(verified_path(bundle_dir, manifest.calibration_split)) as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    encoder = Reencoder(bundle_dir)
    embedded = [encoder.embedding(Tensor.from_numpy(x, "float32")) for x in inputs]
    clean = np.stack([e for e in embedded if e is not None])
    bank, holdout = clean[0::2], clean[1::2]
    if len(bank) <= 5:
        return None
    return KnnAuditor(stats, bank, holdout)
