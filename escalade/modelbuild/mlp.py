"""A small float32 MLP trainer in numpy: dense layers, softmax cross-entropy, Adam.

scikit-learn's MLPClassifier cannot leave one hidden layer linear (the embedding bottleneck)
and trains in float64 on one core's worth of BLAS; this does both in ~1 s per Fashion-MNIST
epoch on two cores. Deterministic for a given seed (fixed shuffles, fixed BLAS call sizes).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.layers import Classifier, check_matches, dense, fold_input_affine

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4  # L2 on weights (not biases), added to the gradient
    # Epochs after which the learning rate is multiplied by `decay`.
    decay_every: int = 0
    decay: float = 0.5


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> F32:
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)


class Mlp:
    """Dense layers; `relu[i]` says whether layer i's output goes through ReLU.

    The last layer is the logits and never has an activation here (softmax is in the loss).
    """

    def __init__(self, sizes: Sequence[int], relu: Sequence[bool], seed: int) -> None:
        if len(relu) != len(sizes) - 2:
            raise ValueError("one activation flag per hidden layer")
        rng = np.random.default_rng(seed)
        self.weights = [_glorot(rng, a, b) for a, b in itertools.pairwise(sizes)]
        self.biases = [np.zeros(b, dtype=np.float32) for b in sizes[1:]]
        self.relu = [*relu, False]

    def forward(self, x: F32, upto: int | None = None) -> list[F32]:
        """Activations after each of the first `upto` layers (all by default)."""
        out: list[F32] = []
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if upto is not None and i >= upto:
                break
            h = h @ w + b
            if self.relu[i]:
                h = np.maximum(h, np.float32(0))
            out.append(h)
        return out

    def logits(self, x: F32) -> F32:
        return self.forward(x)[-1]

    def fit(
        self,
        x: F32,
        y: I64,
        config: TrainConfig,
        *,
        seed: int,
        on_epoch: Callable[[int, int], None] | None = None,
        transform: Callable[[F32, np.random.Generator], F32] | None = None,
    ) -> None:
        """Adam on minibatches; `transform` maps each batch of `x` (augmentation, encoding)."""
        rng = np.random.default_rng(seed)
        params = [*self.weights, *self.biases]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        step = 0
        lr = config.learning_rate
        onehot = np.eye(int(self.weights[-1].shape[1]), dtype=np.float32)
        decay = np.float32(config.weight_decay)
        for epoch in range(config.epochs):
            if config.decay_every and epoch and epoch % config.decay_every == 0:
                lr *= config.decay
            order = rng.permutation(len(x))
            for start in range(0, len(x), config.batch_size):
                batch = order[start : start + config.batch_size]
                inputs = x[batch] if transform is None else transform(x[batch], rng)
                grads = self._gradients(inputs, onehot[y[batch]], decay)
                step += 1
                correction = np.sqrt(1 - beta2**step) / (1 - beta1**step)
                rate = np.float32(lr * correction)
                for i, g in enumerate(grads):
                    # In place: the lists hold the very arrays the model computes with.
                    m[i] *= beta1
                    m[i] += (1 - beta1) * g
                    v[i] *= beta2
                    v[i] += (1 - beta2) * (g * g)
                    params[i] -= rate * m[i] / (np.sqrt(v[i]) + np.float32(eps))
            if on_epoch is not None:
                on_epoch(epoch + 1, config.epochs)

    def _gradients(self, x: F32, target: F32, decay: np.float32) -> list[F32]:
        activations = self.forward(x)
        logits = activations[-1]
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        delta = (probs - target) / np.float32(len(x))
        weight_grads: list[F32] = []
        bias_grads: list[F32] = []
        inputs = [x, *activations[:-1]]
        for i in range(len(self.weights) - 1, -1, -1):
            weight_grads.append(inputs[i].T @ delta + decay * self.weights[i])
            bias_grads.append(delta.sum(axis=0))
            if i:
                delta = delta @ self.weights[i].T
                if self.relu[i - 1]:
                    delta = delta * (inputs[i] > 0)
        return [*weight_grads[::-1], *bias_grads[::-1]]


def fit_mlp_classifier(
    x: F32,
    y: I64,
    *,
    num_classes: int,
    hidden: Sequence[int],
    config: TrainConfig,
    seed: int,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Classifier:
    """ReLU MLP on inputs centred and divided by one global std (folded into the weights).

    One global scale, not per feature: per-feature scaling would lift noisy minor PCA
    components to the weight of the major ones.
    """
    shift = x.mean(axis=0).astype(np.float32)
    scale = np.full(shift.shape, x.std(), dtype=np.float32)
    z = np.ascontiguousarray((x - shift) / scale, dtype=np.float32)
    model = Mlp([z.shape[1], *hidden, num_classes], [True] * len(hidden), seed)
    model.fit(z, y, config, seed=seed, on_epoch=on_epoch)
    layers = [dense(w, b) for w, b in zip(model.weights, model.biases, strict=True)]
    layers[0] = fold_input_affine(layers[0], shift, scale)
    classifier = Classifier(tuple(layers))
    expected = model.logits(z).astype(np.float64)
    expected = np.exp(expected - expected.max(axis=1, keepdims=True))
    check_matches("mlp", classifier, x, expected / expected.sum(axis=1, keepdims=True))
    return classifier
