"""Crafted embeddings. Each attack maps clean embeddings (and the hub's clean answers) to
the vectors a malicious device would send; the benchmark wire-rounds and checks them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.reference import ReferenceStats
from escalade.poisoning_bench.models import BundleModels

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Context:
    stats: ReferenceStats
    models: BundleModels
    rng: np.random.Generator

    def other_class(self, labels: I64) -> I64:
        c = self.stats.num_classes
        shift = self.rng.integers(1, c, size=len(labels))
        return np.asarray((labels + shift) % c, np.int64)


Attack = Callable[[F64, I64, Context], F64]


def scaling(factor: float) -> Attack:
    return lambda x, _labels, _ctx: x * factor


def sign_flip() -> Attack:
    """x -> -x: norm and both Mahalanobis distances unchanged (the encoders centre their
    output), so only the reflection tier can tell; flips nearly every answer."""
    return lambda x, _labels, _ctx: -x


def noise(snr_db: float) -> Attack:
    """Isotropic Gaussian noise at a signal-to-noise ratio (per-coordinate power)."""

    def attack(x: F64, _labels: I64, ctx: Context) -> F64:
        power = (x**2).mean(axis=1, keepdims=True)
        sigma = np.sqrt(power / 10 ** (snr_db / 10))
        return np.asarray(x + sigma * ctx.rng.standard_normal(x.shape), np.float64)

    return attack


def random_vectors(kind: str) -> Attack:
    """Vectors unrelated to the input: Gaussian with the clean norm, or uniform in the range."""

    def attack(x: F64, _labels: I64, ctx: Context) -> F64:
        if kind == "gaussian_same_norm":
            g = ctx.rng.standard_normal(x.shape)
            unit = g / np.linalg.norm(g, axis=1, keepdims=True)
            return np.asarray(unit * np.linalg.norm(x, axis=1)[:, None], np.float64)
        return ctx.rng.uniform(float(x.min()), float(x.max()), size=x.shape)

    return attack


def centroid_shift(alpha: float) -> Attack:
    """x + alpha (mu_target - x): pulled toward another class's centroid."""

    def attack(x: F64, labels: I64, ctx: Context) -> F64:
        target = ctx.stats.class_means[ctx.other_class(labels)]
        return x + alpha * (target - x)

    return attack


def class_offset(alpha: float) -> Attack:
    """x + alpha (mu_target - mu_answer): translated, keeping the clean spread around it."""

    def attack(x: F64, labels: I64, ctx: Context) -> F64:
        means = ctx.stats.class_means
        return x + alpha * (means[ctx.other_class(labels)] - means[labels])

    return attack


def _l2_step(x: F64, grad: F64, step: float) -> F64:
    norms = np.linalg.norm(grad, axis=1, keepdims=True)
    return np.asarray(x + step * grad / np.maximum(norms, 1e-12), np.float64)


def _l2_ball(x: F64, centre: F64, radius: float) -> F64:
    delta = x - centre
    norms = np.linalg.norm(delta, axis=1, keepdims=True)
    return np.asarray(
        centre + delta * np.minimum(1.0, radius / np.maximum(norms, 1e-12)), np.float64
    )


def gradient(epsilon: float, steps: int = 10) -> Attack:
    """Untargeted PGD on the hub MLP within an L2 ball of radius epsilon (white box)."""

    def attack(x: F64, labels: I64, ctx: Context) -> F64:
        adv = x.copy()
        for _ in range(steps):
            adv = _l2_step(adv, ctx.models.loss_gradient(adv, labels), 2.5 * epsilon / steps)
            adv = _l2_ball(adv, x, epsilon)
        return adv

    return attack


def _into_bands(adv: F64, ctx: Context, margin: float) -> F64:
    """Radially pull each vector inside every band, with a safety margin (whitened space)."""
    s = ctx.stats
    w = s.whitening
    for _ in range(3):
        d = (adv - s.mean) @ w.T
        r = np.linalg.norm(d, axis=1, keepdims=True)
        target = np.clip(r, s.mahalanobis_low / margin, s.mahalanobis_high * margin)
        adv = s.mean + (adv - s.mean) * target / r
        predicted = ctx.models.predict(adv)
        centre = s.class_means[predicted]
        r = np.linalg.norm((adv - centre) @ w.T, axis=1, keepdims=True)
        adv = centre + (adv - centre) * np.minimum(1.0, s.class_mahalanobis_high * margin / r)
        n = np.linalg.norm(adv, axis=1, keepdims=True)
        adv = adv * np.clip(n, s.norm_low / margin, s.norm_high * margin) / n
    return adv


def mimicry(epsilon: float, steps: int = 20) -> Attack:
    """Adaptive PGD that knows the reference statistics and stays inside every band."""

    def attack(x: F64, labels: I64, ctx: Context) -> F64:
        adv = x.copy()
        for _ in range(steps):
            adv = _l2_step(adv, ctx.models.loss_gradient(adv, labels), 2.5 * epsilon / steps)
            adv = _into_bands(_l2_ball(adv, x, epsilon), ctx, margin=0.95)
        return adv

    return attack
