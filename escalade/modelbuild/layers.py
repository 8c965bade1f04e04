"""Fitted models as plain numpy weights: dense layers with ReLU between and softmax after.

Every model reduces to this form, so the ONNX export never needs to know how it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class BuildError(Exception):
    """The builder produced something inconsistent (a bug, not bad input)."""


@dataclass(frozen=True)
class Dense:
    weight: F32  # [in, out]
    bias: F32  # [out]


@dataclass(frozen=True)
class Classifier:
    """Dense layers with ReLU between them and softmax after the last."""

    layers: tuple[Dense, ...]

    @property
    def input_dim(self) -> int:
        return int(self.layers[0].weight.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.layers[-1].weight.shape[1])

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(layer.weight.shape[1]) for layer in self.layers[:-1])

    def logits(self, x: F32) -> NDArray[np.float64]:
        """Reference forward pass in float64, to check the exported graph against."""
        h = x.astype(np.float64)
        for i, layer in enumerate(self.layers):
            h = h @ layer.weight.astype(np.float64) + layer.bias.astype(np.float64)
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def probabilities(self, x: F32) -> NDArray[np.float64]:
        return softmax(self.logits(x))

    def with_temperature(self, temperature: float) -> Classifier:
        """softmax(logits / T), folded into the last layer."""
        last = self.layers[-1]
        scaled = dense(
            last.weight.astype(np.float64) / temperature, last.bias.astype(np.float64) / temperature
        )
        return Classifier((*self.layers[:-1], scaled))


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def wire_round(embedding: F32) -> F32:
    """What the hub receives: the embedding after its float16 trip over the wire."""
    return embedding.astype(np.float16).astype(np.float32)


def dense(weight: NDArray[np.floating], bias: NDArray[np.floating]) -> Dense:
    return Dense(np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32))


def fold_input_affine(layer: Dense, shift: F32, scale: F32) -> Dense:
    """Fold x -> (x - shift) / scale into the layer that consumes it."""
    weight = layer.weight.astype(np.float64) / scale.astype(np.float64)[:, None]
    bias = layer.bias.astype(np.float64) - shift.astype(np.float64) @ weight
    return dense(weight, bias)


def check_matches(name: str, clf: Classifier, x: F32, expected: NDArray[np.floating]) -> None:
    error = float(np.abs(clf.probabilities(x) - expected).max())
    if error > 1e-4:
        raise BuildError(f"{name}: extracted weights differ from the trained model by {error:.2e}")
