"""The device's models under ONNX Runtime: encoder (input -> embedding) and local head.

Sessions are built from the firmware profile's execution providers and options; a provider
this ONNX Runtime lacks falls back with one log line (`plan_providers`). `providers` is what the
sessions really use (``session.get_providers()``), not what was asked for. `warm_up` runs every
model once at start (TensorRT builds or loads its engines then, not on the first request).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.profile import FirmwareProfile, ProviderPlan, plan_providers
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


class LocalModel(Protocol):
    """What the micro-batcher runs: an `EdgeRuntime`, or a new bundle on probation
    (edge_agent/bundle_update/guard.py)."""

    def infer(self, features: F32) -> LocalResult: ...

    def infer_batch(self, batch: F32) -> list[LocalResult]: ...


class EdgeRuntime:
    def __init__(
        self, bundle_dir: Path, profile: FirmwareProfile, *, data_dir: Path | None = None
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest: ModelManifest = load_manifest(bundle_dir)
        self.plan: ProviderPlan = plan_providers(
            profile, ort.get_available_providers(), data_dir=data_dir
        )
        for options in self.plan.options:
            cache = options.get("trt_engine_cache_path")
            if cache is not None:
                Path(cache).mkdir(parents=True, exist_ok=True, mode=0o700)
        options = ort.SessionOptions()
        options.intra_op_num_threads = profile.intra_op_threads
        options.inter_op_num_threads = 1
        providers = list(zip(self.plan.names, self.plan.options, strict=True))

        def session(path: Path) -> ort.InferenceSession:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)

        self._encoder = session(verified_path(bundle_dir, self.manifest.encoder))
        self._head = session(verified_path(bundle_dir, self.manifest.head))
        router = self.manifest.router_model
        self._router = session(verified_path(bundle_dir, router)) if router else None
        # What the sessions really run on, in ONNX Runtime's order.
        self.providers: list[str] = list(self._encoder.get_providers())
        # Calls of encoder.run: fewer than requests when micro-batching works.
        self.batches = 0

    @property
    def has_learned_router(self) -> bool:
        return self._router is not None

    def warm_up(self) -> None:
        self.infer_batch(np.zeros((1, self.manifest.input_dim), dtype=np.float32))
        self.batches = 0

    def infer(self, features: F32) -> LocalResult:
        """Embedding and local class probabilities for one input of shape (input_dim,)."""
        return self.infer_batch(features.reshape(1, -1))[0]

    def infer_batch(self, batch: F32) -> list[LocalResult]:
        """One session.run per model for a batch of shape (n, input_dim)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.batches += 1
        with np.errstate(all="ignore"):
            (embedding,) = self._encoder.run([EMBEDDING], {ENCODER_INPUT: batch})
            (probabilities,) = self._head.run([PROBABILITIES], {EMBEDDING: embedding})
            learned: list[float | None] = [None] * len(batch)
            if self._router is not None:
                (right,) = self._router.run(
                    [LEARNED_OUTPUT], {EMBEDDING: embedding, PROBABILITIES: probabilities}
                )
                learned = [float(v) for v in np.asarray(right).reshape(-1)]
        embeddings = np.asarray(embedding, dtype=np.float32)
        probs = np.asarray(probabilities, dtype=np.float32)
        return [
            LocalResult(embedding=embeddings[i], probabilities=probs[i], learned=learned[i])
            for i in range(len(batch))
        ]
