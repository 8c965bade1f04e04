"""The hub's large model: one ONNX Runtime session over the bundle's hub model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cloud_hub.poisoning import ReferenceStats
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    ModelManifest,
    load_manifest,
    verified_path,
)
from escalade_protocol.messages import HubModelInfo


class HubModel:
    def __init__(self, bundle_dir: Path, *, threads: int = 1) -> None:
        self.bundle_dir = bundle_dir
        self.manifest: ModelManifest = load_manifest(bundle_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Reference statistics of clean embeddings, for the poisoning checks. They come with
        # the model and never update from live traffic, so an attacker cannot drag them.
        self.reference = ReferenceStats.load(verified_path(bundle_dir, self.manifest.calibration))
        self._session = ort.InferenceSession(
            str(verified_path(bundle_dir, self.manifest.hub)),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    @property
    def info(self) -> HubModelInfo:
        m = self.manifest
        return HubModelInfo(
            model_id=m.model_id,
            model_version=m.model_version,
            embedding_dim=m.embedding_dim,
            num_classes=m.num_classes,
            wire_dtype=m.wire_dtype,
        )

    def measure_latency(self, runs: int = 50) -> float:
        """Median seconds per single-embedding prediction, measured on zeros."""
        probe = np.zeros(self.manifest.embedding_dim, dtype=np.float32)
        self.predict(probe)  # the first run allocates
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            self.predict(probe)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings))

    def predict(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities for one embedding of shape (embedding_dim,)."""
        row: npt.NDArray[np.float32] = self.predict_batch(embedding.reshape(1, -1))[0]
        return row

    def predict_batch(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities for embeddings of shape (n, embedding_dim): one `session.run`."""
        batch = embeddings.astype(np.float32, copy=False)
        (probabilities,) = self._session.run([PROBABILITIES], {EMBEDDING: batch})
        result: npt.NDArray[np.float32] = np.asarray(probabilities, dtype=np.float32)
        return result
