"""The bundle's encoder and hub model under onnxruntime, and the hub MLP's gradient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import numpy_helper

from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    load_manifest,
    verified_path,
)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


def wire(x: NDArray[np.floating]) -> F32:
    """What the hub receives after the float16 trip."""
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


class BundleModels:
    def __init__(self, bundle_dir: Path) -> None:
        self.manifest = load_manifest(bundle_dir)
        m = self.manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1

        def session(path: Path) -> ort.InferenceSession:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )

        self._encoder = session(verified_path(bundle_dir, m.encoder))
        self.encoder_path = verified_path(bundle_dir, m.encoder)
        self._head = session(verified_path(bundle_dir, m.head))
        hub_path = verified_path(bundle_dir, m.hub)
        self._hub = session(hub_path)
        self.calibration = verified_path(bundle_dir, m.calibration)
        test = np.load(verified_path(bundle_dir, m.test_split))
        self.x_test: F32 = np.asarray(test["X"], np.float32)
        self.y_test = np.asarray(test["y"], np.int64)
        weights = {
            t.name: numpy_helper.to_array(t) for t in onnx.load(str(hub_path)).graph.initializer
        }
        count = len(weights) // 2
        # Gemm with default attributes: h = x @ W + b (weights stored [in, out]).
        self.layers = [
            (
                weights[f"dense{i}.weight"].astype(np.float64),
                weights[f"dense{i}.bias"].astype(np.float64),
            )
            for i in range(count)
        ]

    def embed(self, x: F32) -> F32:
        """Encoder output after the wire round trip."""
        (e,) = self._encoder.run([EMBEDDING], {ENCODER_INPUT: np.asarray(x, np.float32)})
        return wire(e)

    def edge_probabilities(self, embedding: NDArray[np.floating]) -> F32:
        """The device's own head, on the embedding before the wire (it never travels)."""
        (p,) = self._head.run([PROBABILITIES], {EMBEDDING: np.asarray(embedding, np.float32)})
        return np.asarray(p, np.float32)

    def predict(self, embedding: NDArray[np.floating]) -> NDArray[np.int64]:
        """The hub's answers (after the wire round trip)."""
        (p,) = self._hub.run([PROBABILITIES], {EMBEDDING: wire(embedding)})
        return np.asarray(np.asarray(p, np.float32).argmax(axis=1), np.int64)

    def loss_gradient(self, x: F64, labels: NDArray[np.int64]) -> F64:
        """d(cross-entropy of `labels`) / dx for the hub MLP, batched, from its weights."""
        activations = [x]
        h = x
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
            activations.append(h)
        logits = activations[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = p
        grad[np.arange(len(x)), labels] -= 1.0
        for i in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[i]
            grad = grad @ w.T
            if i > 0:
                grad = grad * (activations[i] > 0)
        return np.asarray(grad, np.float64)
