"""Reference statistics of clean embeddings, for the hub's poisoning checks.

Fitted on one set of clean embeddings (mean, shrunk covariance, class means) and thresholded on
another, held back (split conformal, see `_bands`): a quantile taken on the data a model was
fitted on is optimistic, and the hub would then refuse more honest traffic than it claims.

The norm and global tiers are two-sided bands [low, high]. Upper bounds catch vectors that are
too far out (noise, scaling, random vectors); lower bounds catch vectors that are too typical:
in d dimensions honest embeddings lie on a shell, so a vector pulled onto a class centroid (a
blend toward another class) is as anomalous as one pushed out.

Every one of those tiers is symmetric about the mean, and encoders here centre their output, so
a sign-flipped embedding (x -> -x) passes them all. The reflection tier is not symmetric: a small
MLP trained to tell clean embeddings from their mirror images (`reflection_discriminator`), its
odds that a vector is a reflection bounded above like the other tiers.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.layers import Classifier
from escalade.modelbuild.mlp import TrainConfig, fit_mlp_classifier

F64 = NDArray[np.float64]

DEFAULT_TARGET_FPR = 0.01
# The reflection discriminator: one hidden layer, about this many Adam steps whatever the
# dataset's size (digits: ~180 epochs of 2k vectors; Fashion-MNIST: ~4 of 100k).
REFLECTION_HIDDEN = 64
REFLECTION_STEPS = 3000
REFLECTION_BATCH = 128
# Log-odds are clipped here before exp(): beyond it a vector is a reflection either way.
MAX_LOG_ODDS = 30.0


def whitening_matrix(precision: F64) -> F64:
    """W with W.T @ W == precision, so that a Mahalanobis distance is ||W (x - mu)||."""
    lower = np.linalg.cholesky(precision)
    return np.ascontiguousarray(lower.T)


def tier_values(
    embedding: F64, labels: NDArray[np.int64], mean: F64, whitening: F64, class_means: F64
) -> tuple[F64, F64, F64]:
    """Norm, global Mahalanobis, and Mahalanobis to the class mean (shared precision)."""
    whitened = embedding @ whitening.T
    norms = np.linalg.norm(embedding, axis=1)
    mahalanobis = np.linalg.norm(whitened - mean @ whitening.T, axis=1)
    class_mahalanobis = np.linalg.norm(whitened - (class_means @ whitening.T)[labels], axis=1)
    return norms, mahalanobis, class_mahalanobis


def reflection_discriminator(embedding: F64, seed: int) -> Classifier:
    """Clean embeddings (class 0) against their sign flips (class 1): its log-odds, high for a
    mirror image, are an antisymmetric test that no band around the mean can be."""
    x = np.concatenate([embedding, -embedding]).astype(np.float32)
    y = np.concatenate([np.zeros(len(embedding), np.int64), np.ones(len(embedding), np.int64)])
    epochs = max(1, math.ceil(REFLECTION_STEPS * REFLECTION_BATCH / len(x)))
    config = TrainConfig(epochs=epochs, batch_size=REFLECTION_BATCH, decay_every=0)
    return fit_mlp_classifier(
        x, y, num_classes=2, hidden=(REFLECTION_HIDDEN,), config=config, seed=seed
    )


def reflection_odds(embedding: F64, layers: tuple[F64, F64, F64, F64]) -> F64:
    """odds(reflection) = exp(log-odds) of the stored discriminator (see `reflection_arrays`)."""
    w0, b0, w1, b1 = layers
    log_odds = np.maximum(embedding @ w0 + b0, 0.0) @ w1 + b1
    return np.asarray(np.exp(np.clip(log_odds, -MAX_LOG_ODDS, MAX_LOG_ODDS)), np.float64)


def reflection_arrays(discriminator: Classifier) -> tuple[F64, F64, F64, F64]:
    """(w0, b0, w1, b1): the hidden layer, and the two logits reduced to their difference."""
    hidden, out = discriminator.layers
    w = out.weight.astype(np.float64)
    b = out.bias.astype(np.float64)
    return (
        hidden.weight.astype(np.float64),
        hidden.bias.astype(np.float64),
        w[:, 1] - w[:, 0],
        np.asarray(b[1] - b[0], np.float64),
    )


def _bands(
    fit: tuple[F64, ...], held: tuple[F64, ...], target_fpr: float
) -> tuple[float, list[tuple[float, float]]]:
    """Band edges whose union flags at most `target_fpr` of new clean embeddings.

    Split conformal: the shape of the bands (each edge at the fit set's target/2 quantile)
    comes from the fit set only, giving one score s = max over tiers of max(v / high, low / v).
    Its ceil((n + 1)(1 - target))-th smallest value on the n held-back embeddings, t, scales
    every edge (high * t, low / t); then P(flag) <= target for exchangeable clean data, with no
    in-sample optimism. The class tier is one-sided: the global lower edge already catches
    vectors pulled onto a centroid, and every extra edge spends part of a small budget.

    The reflection tier (the fourth, where given) has a fixed shape, odds of 1 (as likely a
    reflection as not): its discriminator was trained on the fit set, so a quantile there would
    be optimistic and inflate the shared scale. The held-back set still sets the scale.
    """
    q = target_fpr / 2
    shape = [
        (
            float(np.quantile(v, q)) if i < 2 else 0.0,
            float(np.quantile(v, 1 - q)) if i < 3 else 1.0,
        )
        for i, v in enumerate(fit)
    ]
    with np.errstate(divide="ignore"):
        score = np.max(
            [np.maximum(v / high, low / v) for v, (low, high) in zip(held, shape, strict=True)],
            axis=0,
        )
    rank = min(len(score), int(np.ceil((len(score) + 1) * (1 - target_fpr))))
    scale = float(np.sort(score)[rank - 1])
    return scale, [(low / scale, high * scale) for low, high in shape]


def embedding_statistics(
    embedding: NDArray[np.floating],
    y: NDArray[np.int64],
    *,
    threshold_embedding: NDArray[np.floating] | None = None,
    threshold_labels: NDArray[np.int64] | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    seed: int = 0,
    hard_embedding: NDArray[np.floating] | None = None,
) -> dict[str, F64]:
    """Fit on (`embedding`, `y`); set band edges on the threshold set for `target_fpr`.

    `threshold_labels` should be the classes the hub will predict (its class tier compares an
    embedding with the predicted class's mean). Without a threshold set, every other example
    of each class is held back from the fit.
    """
    from sklearn.covariance import LedoitWolf

    e = embedding.astype(np.float64)
    if threshold_embedding is None:
        held = np.zeros(len(e), dtype=bool)
        for c in np.unique(y):
            held[np.flatnonzero(y == c)[1::2]] = True
        e, t, y, t_labels = e[~held], e[held], y[~held], y[held]
    else:
        t = threshold_embedding.astype(np.float64)
        t_labels = y if threshold_labels is None else threshold_labels
        if threshold_labels is None and len(t) != len(y):
            raise ValueError("threshold_labels are needed when the threshold set is separate")
    num_classes = int(max(y.max(), t_labels.max())) + 1
    # Ledoit-Wolf shrinkage: a few hundred samples in 32 dimensions make the plain estimate
    # poorly conditioned, and the hub needs a stable inverse.
    covariance = np.asarray(LedoitWolf().fit(e).covariance_, dtype=np.float64)
    covariance = (covariance + covariance.T) / 2
    precision = np.linalg.inv(covariance)
    precision = (precision + precision.T) / 2
    whitening = whitening_matrix(precision)
    mean = e.mean(axis=0)
    class_means = np.stack([e[y == c].mean(axis=0) for c in range(num_classes)])
    reflection = reflection_arrays(reflection_discriminator(e, seed))
    fit_values = (*tier_values(e, y, mean, whitening, class_means), reflection_odds(e, reflection))
    held_values = (
        *tier_values(t, t_labels, mean, whitening, class_means),
        reflection_odds(t, reflection),
    )
    scale, bands = _bands(fit_values, held_values, target_fpr)
    (norm_low, norm_high), (m_low, m_high), (_, c_high), (_, r_high) = bands

    def scalar(value: float) -> F64:
        return np.asarray(value, dtype=np.float64)

    return {
        "mean": mean,
        "covariance": covariance,
        "precision": precision,
        "class_means": class_means,
        "norm_low": scalar(norm_low),
        "norm_high": scalar(norm_high),
        "mahalanobis_threshold": scalar(m_high),
        # Added for the poisoning tiers; the keys above keep their meaning.
        "whitening": whitening,
        "mahalanobis_low": scalar(m_low),
        "class_mahalanobis_high": scalar(c_high),
        "target_fpr": scalar(target_fpr),
        "conformal_scale": scalar(scale),
        "fit_count": scalar(len(e)),
        "threshold_count": scalar(len(t)),
        # The reflection tier (sign flips); bundles without these keys load with it off.
        "reflection_w0": reflection[0],
        "reflection_b0": reflection[1],
        "reflection_w1": reflection[2],
        "reflection_b1": reflection[3],
        "reflection_high": scalar(r_high),
        **(
            {}
            if hard_embedding is None
            else {"hard_mean": np.asarray(hard_embedding, np.float64).mean(axis=0)}
        ),
    }
