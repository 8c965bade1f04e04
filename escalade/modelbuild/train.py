"""Splitting and fitting: scikit-learn estimators reduced to plain numpy weights.

Every model ends as a stack of dense layers (ReLU between, softmax after the last) or, for the
encoder, one affine map, so the ONNX export never needs to know about scikit-learn.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.datasets import Dataset

log = logging.getLogger(__name__)

EMBEDDING_DIM = 32
HUB_HIDDEN = (256, 256)
HUB_EPOCHS = 100
# L2 penalties picked on digits across seeds: the head stays small and well ranked by its
# max probability, the hub is regularised enough to gain ~2.5 points over the head.
HEAD_C = 1.0
HUB_ALPHA = 0.1

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


class BuildError(Exception):
    """The builder produced something inconsistent (a bug, not bad input)."""


@dataclass(frozen=True)
class Split:
    X_train: F32
    y_train: I64
    X_cal: F32
    y_cal: I64
    X_test: F32
    y_test: I64


def split_dataset(dataset: Dataset, seed: int) -> Split:
    """Stratified 60% train, 20% calibration, 20% test."""
    from sklearn.model_selection import train_test_split

    X_train, X_rest, y_train, y_rest = train_test_split(
        dataset.X, dataset.y, test_size=0.4, stratify=dataset.y, random_state=seed
    )
    X_cal, X_test, y_cal, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    return Split(X_train, y_train, X_cal, y_cal, X_test, y_test)


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

    def probabilities(self, x: F32) -> NDArray[np.float64]:
        """Reference forward pass in float64, to check the exported graph against."""
        h = x.astype(np.float64)
        for i, layer in enumerate(self.layers):
            h = h @ layer.weight.astype(np.float64) + layer.bias.astype(np.float64)
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        h -= h.max(axis=1, keepdims=True)
        e = np.exp(h)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def wire_round(embedding: F32) -> F32:
    """What the hub receives: the embedding after its float16 trip over the wire."""
    return embedding.astype(np.float16).astype(np.float32)


def _dense(weight: NDArray[np.floating], bias: NDArray[np.floating]) -> Dense:
    return Dense(np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32))


def _fold_input_affine(layer: Dense, shift: F32, scale: F32) -> Dense:
    """Fold x -> (x - shift) / scale into the layer that consumes it."""
    weight = layer.weight.astype(np.float64) / scale.astype(np.float64)[:, None]
    bias = layer.bias.astype(np.float64) - shift.astype(np.float64) @ weight
    return _dense(weight, bias)


def _softmax_logits(weight: NDArray[np.floating], bias: NDArray[np.floating]) -> Dense:
    """scikit-learn models two classes with one logistic unit z; softmax([0, z]) is the same."""
    if weight.shape[1] == 1:
        weight = np.hstack([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return _dense(weight, bias)


def _check_matches(name: str, clf: Classifier, x: F32, expected: NDArray[np.floating]) -> None:
    error = float(np.abs(clf.probabilities(x) - expected).max())
    if error > 1e-4:
        raise BuildError(f"{name}: extracted weights differ from the estimator by {error:.2e}")


@dataclass(frozen=True)
class Encoder:
    """embedding = input @ weight + bias: centring, PCA projection and one global scale."""

    weight: F32  # [D, E]
    bias: F32  # [E]
    explained_variance_ratio: float

    def embed(self, x: F32) -> F32:
        return np.asarray(x @ self.weight + self.bias, dtype=np.float32)


def fit_encoder(X: F32, dim: int, seed: int) -> Encoder:
    """Unsupervised PCA: generic features, so the supervised hub has room to beat the head.

    Not whitened: one global factor brings the mean component variance to 1 but keeps the
    variance ordering, so distances stay meaningful and noisy minor components stay small.
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dim, svd_solver="full", random_state=seed).fit(X.astype(np.float64))
    scale = float(np.sqrt(pca.explained_variance_.mean()))
    weight = pca.components_.T / scale
    bias = -(pca.mean_ @ weight)
    return Encoder(
        weight=np.ascontiguousarray(weight, np.float32),
        bias=np.ascontiguousarray(bias, np.float32),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
    )


def fit_head(embedding: F32, y: I64) -> Classifier:
    """Multinomial logistic regression on standardised embeddings (folded into the weights)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(embedding)
    z = scaler.transform(embedding)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=HEAD_C, max_iter=5000).fit(z, y)
    for w in caught:
        # An unconverged lbfgs still gives a usable head; say so rather than fail the build.
        log.warning("edge head: %s", w.message)
    layer = _fold_input_affine(
        _softmax_logits(model.coef_.T, model.intercept_),
        scaler.mean_.astype(np.float32),
        scaler.scale_.astype(np.float32),
    )
    head = Classifier((layer,))
    _check_matches("edge head", head, embedding, model.predict_proba(z))
    return head


def fit_hub(
    wire_embedding: F32,
    y: I64,
    num_classes: int,
    seed: int,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Classifier:
    """MLP on the float16-rounded embeddings the hub will actually receive.

    Inputs are centred and divided by one global standard deviation, not per feature: per
    feature scaling would blow the noisy minor PCA components up to the weight of the major
    ones, which cost about half a point of accuracy on digits.
    """
    from sklearn.neural_network import MLPClassifier

    shift = wire_embedding.mean(axis=0).astype(np.float32)
    scale = np.full(shift.shape, wire_embedding.std(), dtype=np.float32)
    z = (wire_embedding - shift) / scale
    # A RandomState instance (not an int) so each partial_fit epoch draws a fresh shuffle.
    model = MLPClassifier(
        hidden_layer_sizes=HUB_HIDDEN, alpha=HUB_ALPHA, random_state=np.random.RandomState(seed)
    )
    classes = np.arange(num_classes)
    # partial_fit runs exactly one epoch per call: a fixed budget, progress per epoch and no
    # ConvergenceWarning, since there is no stopping criterion to miss.
    for epoch in range(HUB_EPOCHS):
        model.partial_fit(z, y, classes=classes)
        if on_epoch is not None:
            on_epoch(epoch + 1, HUB_EPOCHS)
    layers = [_dense(w, b) for w, b in zip(model.coefs_, model.intercepts_, strict=True)]
    layers[0] = _fold_input_affine(layers[0], shift, scale)
    layers[-1] = _softmax_logits(layers[-1].weight, layers[-1].bias)
    hub = Classifier(tuple(layers))
    _check_matches("hub", hub, wire_embedding, model.predict_proba(z))
    return hub
