"""Splitting and fitting: the encoder, the edge head and the hub, reduced to numpy weights.

Small datasets use scikit-learn (logistic head, MLPClassifier hub); large ones the numpy
trainer in `mlp.py`, which is several times faster there. `recipe_for` picks.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.datasets import Dataset
from escalade.modelbuild.layers import (
    F32,
    BuildError,
    Classifier,
    Dense,
    check_matches,
    dense,
    fold_input_affine,
    softmax,
    wire_round,
)
from escalade.modelbuild.mlp import Mlp, TrainConfig, fit_mlp_classifier

log = logging.getLogger(__name__)

__all__ = [
    "F32",
    "I64",
    "BuildError",
    "Classifier",
    "Dense",
    "Encoder",
    "EncoderKind",
    "Recipe",
    "Split",
    "fit_encoder",
    "fit_head",
    "fit_hub",
    "fit_private_encoder",
    "fit_temperature",
    "recipe_for",
    "split_dataset",
    "wire_round",
    "with_encoder",
]

I64 = NDArray[np.int64]

# L2 penalties picked on digits across seeds: the head stays small and well ranked by its
# max probability, the hub is regularised enough to gain ~2.5 points over the head.
HEAD_C = 1.0
HUB_ALPHA = 0.1
# From this many training examples on, the numpy trainer and the larger recipe are used.
LARGE_DATASET = 20_000


EncoderKind = Literal["pca", "mlp"]
ENCODER_KINDS: tuple[EncoderKind, ...] = get_args(EncoderKind)
# The private recipe (docs/privacy.md): a supervised ReLU encoder with a bottleneck as wide as
# the number of classes. It keeps what the task needs and drops much of the rest, so a decoder
# rebuilds inputs ~2.7x worse than a pseudo-inverse rebuilds them from PCA (digits).
PRIVATE_HIDDEN = (256, 256)
PRIVATE_TRAINING = TrainConfig(epochs=60, batch_size=64)
PRIVATE_TRAINING_LARGE = TrainConfig(epochs=12, batch_size=128, decay_every=5)


@dataclass(frozen=True)
class Recipe:
    """What to train; `head_hidden == ()` means a logistic-regression head."""

    embedding_dim: int
    head_hidden: tuple[int, ...]
    hub_hidden: tuple[int, ...]
    hub_epochs: int
    large: bool  # numpy trainer (Adam, float32) rather than scikit-learn
    encoder: EncoderKind = "pca"


def with_encoder(recipe: Recipe, kind: EncoderKind, num_classes: int) -> Recipe:
    """The recipe with `kind`'s encoder: "mlp" narrows the embedding to `num_classes`."""
    if kind == "pca":
        return replace(recipe, encoder="pca")
    return replace(recipe, encoder="mlp", embedding_dim=num_classes)


SMALL = Recipe(embedding_dim=32, head_hidden=(), hub_hidden=(256, 256), hub_epochs=100, large=False)
# Picked on Fashion-MNIST: 64 float16 values are 128 bytes, 24x fewer than 784 float32 pixels.
# A 64-unit head lifts the edge from ~83% (logistic) to ~87% for ~5k extra multiply-adds, and
# ranks its errors well enough for max-probability routing; the hub gains ~2 points on top.
LARGE = Recipe(
    embedding_dim=64, head_hidden=(64,), hub_hidden=(256, 256), hub_epochs=30, large=True
)
HEAD_TRAINING = TrainConfig(epochs=20, batch_size=128, decay_every=8)


def recipe_for(dataset: Dataset) -> Recipe:
    recipe = LARGE if len(dataset.X) >= LARGE_DATASET else SMALL
    dim = min(recipe.embedding_dim, dataset.input_dim)
    return Recipe(dim, recipe.head_hidden, recipe.hub_hidden, recipe.hub_epochs, recipe.large)


@dataclass(frozen=True)
class Split:
    X_train: F32
    y_train: I64
    X_cal: F32
    y_cal: I64
    X_test: F32
    y_test: I64


def split_dataset(dataset: Dataset, seed: int, *, max_train: int | None = None) -> Split:
    """Stratified 60% train, 20% calibration, 20% test; or, with an official test split,
    that test split and a calibration split as large (at most a quarter of the rest).

    `max_train` keeps a stratified subset of the training split (quick builds in tests).
    """
    from sklearn.model_selection import train_test_split

    if dataset.X_test is None or dataset.y_test is None:
        X_train, X_rest, y_train, y_rest = train_test_split(
            dataset.X, dataset.y, test_size=0.4, stratify=dataset.y, random_state=seed
        )
        X_cal, X_test, y_cal, y_test = train_test_split(
            X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
        )
    else:
        X_train, X_cal, y_train, y_cal = train_test_split(
            dataset.X,
            dataset.y,
            test_size=min(len(dataset.X_test), len(dataset.X) // 4),
            stratify=dataset.y,
            random_state=seed,
        )
        X_test, y_test = dataset.X_test, dataset.y_test
    if max_train is not None and max_train < len(X_train):
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=max_train, stratify=y_train, random_state=seed
        )
    return Split(X_train, y_train, X_cal, y_cal, X_test, y_test)


def _softmax_logits(weight: NDArray[np.floating], bias: NDArray[np.floating]) -> Dense:
    """scikit-learn models two classes with one logistic unit z; softmax([0, z]) is the same."""
    if weight.shape[1] == 1:
        weight = np.hstack([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return dense(weight, bias)


@dataclass(frozen=True)
class Encoder:
    """Dense layers with ReLU after each (after the last too when `relu_out`).

    PCA: one layer (centring, projection and one global scale) and no ReLU.
    """

    layers: tuple[Dense, ...]
    relu_out: bool = False
    explained_variance_ratio: float | None = None  # PCA only

    @property
    def linear(self) -> bool:
        return len(self.layers) == 1 and not self.relu_out

    def _forward(self, x: NDArray[np.floating], dtype: type[np.floating]) -> NDArray[np.floating]:
        h = np.asarray(x, dtype)
        for i, layer in enumerate(self.layers):
            h = h @ layer.weight.astype(dtype) + layer.bias.astype(dtype)
            if i < len(self.layers) - 1 or self.relu_out:
                h = np.maximum(h, 0)
        return h

    def embed(self, x: F32) -> F32:
        return np.asarray(self._forward(x, np.float32), dtype=np.float32)

    def reference(self, x: F32) -> NDArray[np.float64]:
        """Forward pass in float64, to check the exported graph against."""
        return np.asarray(self._forward(x, np.float64), dtype=np.float64)


def fit_encoder(X: F32, dim: int, seed: int) -> Encoder:
    """Unsupervised PCA: generic features, so the supervised hub has room to beat the head.

    Not whitened: one global factor brings the mean component variance to 1 but keeps the
    variance ordering, so distances stay meaningful and noisy minor components stay small.
    The covariance solver is exact like a full SVD and ~15x faster for N >> D.
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dim, svd_solver="covariance_eigh", random_state=seed)
    pca.fit(X.astype(np.float64))
    scale = float(np.sqrt(pca.explained_variance_.mean()))
    weight = pca.components_.T / scale
    bias = -(pca.mean_ @ weight)
    return Encoder(
        layers=(dense(weight, bias),),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
    )


def fit_private_encoder(
    X: F32, y: I64, dim: int, num_classes: int, seed: int, *, large: bool = False
) -> Encoder:
    """Supervised: input -> ReLU layers -> a `dim`-wide ReLU bottleneck, trained through a
    linear classifier on top that is then dropped (the edge head and hub are fitted anew)."""
    shift = X.mean(axis=0).astype(np.float32)
    scale = np.full(shift.shape, X.std(), dtype=np.float32)
    z = np.ascontiguousarray((X - shift) / scale, dtype=np.float32)
    sizes = [z.shape[1], *PRIVATE_HIDDEN, dim, num_classes]
    model = Mlp(sizes, [True] * (len(PRIVATE_HIDDEN) + 1), seed)
    model.fit(z, y, PRIVATE_TRAINING_LARGE if large else PRIVATE_TRAINING, seed=seed)
    layers = [dense(w, b) for w, b in zip(model.weights[:-1], model.biases[:-1], strict=True)]
    layers[0] = fold_input_affine(layers[0], shift, scale)
    return Encoder(layers=tuple(layers), relu_out=True)


def fit_head(
    embedding: F32, y: I64, *, recipe: Recipe = SMALL, num_classes: int = 0, seed: int = 0
) -> Classifier:
    """The edge head: logistic regression, or a small MLP when the recipe has hidden units."""
    if recipe.head_hidden:
        classes = num_classes or int(y.max()) + 1
        return fit_mlp_classifier(
            embedding,
            y,
            num_classes=classes,
            hidden=recipe.head_hidden,
            config=HEAD_TRAINING,
            seed=seed,
        )
    return _fit_logistic_head(embedding, y)


def _fit_logistic_head(embedding: F32, y: I64) -> Classifier:
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
    layer = fold_input_affine(
        _softmax_logits(model.coef_.T, model.intercept_),
        scaler.mean_.astype(np.float32),
        scaler.scale_.astype(np.float32),
    )
    head = Classifier((layer,))
    check_matches("edge head", head, embedding, model.predict_proba(z))
    return head


def fit_temperature(classifier: Classifier, x: F32, y: I64) -> float:
    """The T minimising the negative log-likelihood of softmax(logits / T) on held-out data.

    A grid over log T, so the answer is deterministic and needs no optimiser.
    """
    logits = classifier.logits(x)
    rows = np.arange(len(y))
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 481)):
        nll = -float(np.log(softmax(logits / t)[rows, y] + 1e-300).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def fit_hub(
    wire_embedding: F32,
    y: I64,
    num_classes: int,
    *,
    seed: int,
    on_epoch: Callable[[int, int], None] | None = None,
    recipe: Recipe = SMALL,
) -> Classifier:
    """MLP on the float16-rounded embeddings the hub will actually receive."""
    if recipe.large:
        config = TrainConfig(epochs=recipe.hub_epochs, batch_size=256, decay_every=10)
        return fit_mlp_classifier(
            wire_embedding,
            y,
            num_classes=num_classes,
            hidden=recipe.hub_hidden,
            config=config,
            seed=seed,
            on_epoch=on_epoch,
        )
    return _fit_sklearn_hub(
        wire_embedding, y, num_classes, seed=seed, recipe=recipe, on_epoch=on_epoch
    )


def _fit_sklearn_hub(
    wire_embedding: F32,
    y: I64,
    num_classes: int,
    *,
    seed: int,
    recipe: Recipe,
    on_epoch: Callable[[int, int], None] | None,
) -> Classifier:
    """Inputs centred and divided by one global standard deviation, not per feature: per
    feature scaling would blow the noisy minor PCA components up to the weight of the major
    ones, which cost about half a point of accuracy on digits.
    """
    from sklearn.neural_network import MLPClassifier

    shift = wire_embedding.mean(axis=0).astype(np.float32)
    scale = np.full(shift.shape, wire_embedding.std(), dtype=np.float32)
    z = (wire_embedding - shift) / scale
    # A RandomState instance (not an int) so each partial_fit epoch draws a fresh shuffle.
    model = MLPClassifier(
        hidden_layer_sizes=recipe.hub_hidden,
        alpha=HUB_ALPHA,
        random_state=np.random.RandomState(seed),
    )
    classes = np.arange(num_classes)
    # partial_fit runs exactly one epoch per call: a fixed budget, progress per epoch and no
    # ConvergenceWarning, since there is no stopping criterion to miss.
    for epoch in range(recipe.hub_epochs):
        model.partial_fit(z, y, classes=classes)
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.hub_epochs)
    layers = [dense(w, b) for w, b in zip(model.coefs_, model.intercepts_, strict=True)]
    layers[0] = fold_input_affine(layers[0], shift, scale)
    layers[-1] = _softmax_logits(layers[-1].weight, layers[-1].bias)
    hub = Classifier(tuple(layers))
    check_matches("hub", hub, wire_embedding, model.predict_proba(z))
    return hub
