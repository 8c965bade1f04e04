"""Reconstruction attackers and probes against wire embeddings. Each knows the encoder and has
public data from the same distribution (the bundle's training split); none sees the victim's
inputs.

- `pseudo_inverse`: for a linear encoder e = x W + b, x^ = (e - b) W^+ (minimum-norm inverse);
- decoders fitted on (public embedding, public input) pairs: ridge (linear), an MLP, k-NN;
- an attribute probe (logistic regression from embedding to a property of the input that the
  task does not need: total ink above the public median);
- re-identification: is the rebuilt input nearest to its own original among all victims?
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Decoder = Callable[[F32], F64]

# Public data for the learned decoders is sampled down to this (bounded time on 60k-image sets).
MAX_PUBLIC = 10_000


def pseudo_inverse(encoder_path: Path) -> Decoder | None:
    """x^ = (e - b) W^+ for a one-Gemm encoder; None for anything else (nonlinear)."""
    graph = onnx.load(str(encoder_path)).graph
    if [n.op_type for n in graph.node] != ["Gemm"]:
        return None
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    w, b = weights["encoder.weight"], weights["encoder.bias"]
    inverse = np.linalg.pinv(w)
    return lambda e: np.asarray((e.astype(np.float64) - b) @ inverse, np.float64)


# The MLP decoder: one hidden layer, Adam on mean squared error in float32 (scikit-learn's
# float64 MLPRegressor took ~100 s per fit on this 2-core machine; this takes a few).
DECODER_HIDDEN = 256
DECODER_STEPS = 3000
DECODER_BATCH = 128


def _mlp_decoder(e: F32, target: F32, seed: int, steps: int) -> Decoder:
    rng = np.random.default_rng(seed)
    e_shift, e_scale = e.mean(axis=0), e.std() + 1e-6
    t_shift, t_scale = target.mean(axis=0), target.std() + 1e-6
    z, y = (e - e_shift) / e_scale, (target - t_shift) / t_scale
    d, h, out = z.shape[1], DECODER_HIDDEN, y.shape[1]
    params = [
        rng.normal(0, np.sqrt(2 / d), (d, h)).astype(np.float32),
        np.zeros(h, np.float32),
        rng.normal(0, np.sqrt(1 / h), (h, out)).astype(np.float32),
        np.zeros(out, np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        batch = rng.integers(0, len(z), DECODER_BATCH)
        xb, yb = z[batch], y[batch]
        hidden = np.maximum(xb @ params[0] + params[1], 0)
        delta = (hidden @ params[2] + params[3] - yb) * np.float32(2 / len(xb))
        back = (delta @ params[2].T) * (hidden > 0)
        grads = [xb.T @ back, back.sum(axis=0), hidden.T @ delta, delta.sum(axis=0)]
        rate = 1e-3 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= np.float32(rate) * m[i] / (np.sqrt(v[i]) + np.float32(1e-8))

    def decode(embedding: F32) -> F64:
        zz = ((embedding - e_shift) / e_scale).astype(np.float32)
        y_hat = np.maximum(zz @ params[0] + params[1], 0) @ params[2] + params[3]
        return np.asarray(y_hat * t_scale + t_shift, np.float64)

    return decode


def fit_decoders(embedding: F32, x: F32, seed: int, *, quick: bool = False) -> dict[str, Decoder]:
    """Decoders trained on public (embedding, input) pairs."""
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor

    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(x))[:MAX_PUBLIC]
    e = np.asarray(embedding[keep], np.float32)
    target = np.asarray(x[keep], np.float32)
    ridge = Ridge(alpha=1e-3).fit(e.astype(np.float64), target.astype(np.float64))
    knn = KNeighborsRegressor(n_neighbors=5).fit(e, target)
    mlp = _mlp_decoder(e, target, seed, DECODER_STEPS // 3 if quick else DECODER_STEPS)
    return {
        "ridge_decoder": lambda v: np.asarray(ridge.predict(v.astype(np.float64)), np.float64),
        "mlp_decoder": mlp,
        "knn_decoder": lambda v: np.asarray(knn.predict(v), np.float64),
    }


def relative_l2(rebuilt: NDArray[np.floating], x: NDArray[np.floating]) -> float:
    """Mean over inputs of ||x^ - x|| / ||x||."""
    x64 = np.asarray(x, np.float64)
    error = np.linalg.norm(np.asarray(rebuilt, np.float64) - x64, axis=1)
    return float((error / np.maximum(np.linalg.norm(x64, axis=1), 1e-12)).mean())


def reidentified(rebuilt: NDArray[np.floating], x: NDArray[np.floating]) -> float:
    """Share of rebuilt inputs whose nearest original (among all victims) is their own."""
    a, b = np.asarray(rebuilt, np.float64), np.asarray(x, np.float64)
    d = (a**2).sum(axis=1)[:, None] - 2 * a @ b.T + (b**2).sum(axis=1)[None, :]
    return float((d.argmin(axis=1) == np.arange(len(a))).mean())


def ink(x: NDArray[np.floating]) -> F64:
    return np.asarray(np.asarray(x, np.float64).sum(axis=1), np.float64)


def attribute_probe(
    public: NDArray[np.floating], public_x: F32, victim: NDArray[np.floating], victim_x: F32
) -> float:
    """Accuracy of a logistic probe for "more ink than the public median" on the victims."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cut = float(np.median(ink(public_x)))
    scaler = StandardScaler().fit(public)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(public), ink(public_x) > cut)
    return float((probe.predict(scaler.transform(victim)) == (ink(victim_x) > cut)).mean())
