"""The device's models under ONNX Runtime: encoder (input -> embedding) and local head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.profile import FirmwareProfile, select_providers
from edge_agent.router import LEARNED_OUTPUT
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    ModelManifest,
    load_manifest,
    verified_path,
)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class LocalResult:
    embedding: F32
    probabilities: F32
    # The learned router's probability that the local answer is right, when the bundle has one.
    learned: float | None = None


class EdgeRuntime:
    def __init__(self, bundle_dir: Path, profile: FirmwareProfile) -> None:
        self.manifest: ModelManifest = load_manifest(bundle_dir)
        self.providers = select_providers(profile, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = profile.intra_op_threads
        options.inter_op_num_threads = 1

        def session(path: Path) -> ort.InferenceSession:
            return ort.InferenceSession(str(path), sess_options=options, providers=self.providers)

        self._encoder = session(verified_path(bundle_dir, self.manifest.encoder))
        self._head = session(verified_path(bundle_dir, self.manifest.head))
        router = self.manifest.router_model
        self._router = session(verified_path(bundle_dir, router)) if router else None

    @property
    def has_learned_router(self) -> bool:
        return self._router is not None

    def infer(self, features: F32) -> LocalResult:
        """Embedding and local class probabilities for one input of shape (input_dim,)."""
        batch = features.reshape(1, -1).astype(np.float32, copy=False)
        (embedding,) = self._encoder.run([EMBEDDING], {ENCODER_INPUT: batch})
        (probabilities,) = self._head.run([PROBABILITIES], {EMBEDDING: embedding})
        learned = None
        if self._router is not None:
            (right,) = self._router.run(
                [LEARNED_OUTPUT], {EMBEDDING: embedding, PROBABILITIES: probabilities}
            )
            learned = float(np.asarray(right).reshape(-1)[0])
        return LocalResult(
            embedding=np.asarray(embedding[0], dtype=np.float32),
            probabilities=np.asarray(probabilities[0], dtype=np.float32),
            learned=learned,
        )
