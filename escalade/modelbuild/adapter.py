"""Adapters v2 -> v1: map a new encoder's embeddings into the space an old hub was trained on.

`fit_adapter` fits on paired embeddings of the same public inputs (v2's wire-rounded, v1's as
the hub was trained on): "linear" is ridge least squares on standardised inputs; "mlp" is a
one-hidden-layer ReLU network trained on the mean squared error in the same standardised
coordinates, with an exact linear skip path (x = relu(x) - relu(-x), so the skip folds into the
hidden layer and the adapter stays one Gemm/Relu/Gemm chain). The skip starts the MLP from the
least-squares solution: it only has to learn the nonlinear rest, and never does worse than
linear on its training pairs.

`adapt_bundle` writes a copy of the v1 bundle with the adapter (ONNX, the `Encoder` graph: the
input is a v2 embedding) and its own reference statistics listed in ``manifest.adapters``.
The copy has a new digest and must be signed again.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from escalade.modelbuild.files import npz_bytes, write_atomic
from escalade.modelbuild.layers import BuildError, dense, wire_round
from escalade.modelbuild.onnx_export import encoder_model, serialize
from escalade.modelbuild.stats import embedding_statistics
from escalade.modelbuild.train import Encoder
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    MANIFEST_NAME,
    PROBABILITIES,
    AdapterEntry,
    AdapterMetrics,
    ArtifactFile,
    ModelManifest,
    load_manifest,
    sha256_file,
    verified_path,
    write_manifest,
)
from escalade_protocol.bundles import artifacts

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
AdapterKind = Literal["linear", "mlp"]

# Ridge on standardised inputs: enough to keep near-collinear PCA components stable.
RIDGE = 1e-3
MLP_BATCH = 256
MLP_LR = 1e-3
MLP_DECAY = 1e-4
# Weight of the hub's cross-entropy against the embedding distance (see _fit_residual_mlp).
HUB_WEIGHT = 1.0


@dataclass(frozen=True)
class AdapterConfig:
    """The MLP's width and budget (Adam steps whatever the data's size), and how many mixup
    pairs per real pair to add: a blend of two public inputs is an input both encoders read,
    so extra pairs cost nothing but encoder time. On digits (1.4k pairs, MLP 128): 1.7 pp
    below the retrained hub without mixup, 0.6 pp with 4 per pair; 512 wide: 0.8 pp."""

    hidden: int = 128
    steps: int = 3000
    mixup: int = 4


QUICK = AdapterConfig(hidden=64, steps=400, mixup=1)
# "auto" keeps the linear adapter when it is within this of the retrained hub's accuracy.
LINEAR_GOOD_ENOUGH = 0.005


def _standardiser(x: F64) -> tuple[F64, F64]:
    shift = x.mean(axis=0)
    scale = x.std(axis=0)
    return shift, np.where(scale > 1e-8, scale, 1.0)


def _ridge(z: F64, t: F64) -> tuple[F64, F64]:
    """(W, b) minimising ||z W + b - t||^2 + RIDGE n ||W||^2, z standardised (mean 0)."""
    n, d = z.shape
    weight = np.linalg.solve(z.T @ z + RIDGE * n * np.eye(d), z.T @ (t - t.mean(axis=0)))
    return weight, t.mean(axis=0) - z.mean(axis=0) @ weight


def fit_adapter(
    source: F32,
    target: F32,
    kind: AdapterKind,
    *,
    hub: HubLayers | None = None,
    config: AdapterConfig = AdapterConfig(),
    seed: int = 0,
) -> Encoder:
    """An Encoder mapping `source` rows (v2 embeddings) onto `target` rows (v1 embeddings);
    `hub`: the v1 hub's layers (`hub_layers`), for the MLP's second loss term."""
    if len(source) != len(target) or len(source) < 2:
        raise BuildError("an adapter needs at least two paired embeddings")
    s = source.astype(np.float64)
    t = target.astype(np.float64)
    shift, scale = _standardiser(s)
    z = (s - shift) / scale
    weight, bias = _ridge(z, t)
    if kind == "linear":
        layer = dense(weight / scale[:, None], bias - (shift / scale) @ weight)
        return Encoder(layers=(layer,))
    weight, bias, w1, b1, w2, b2 = _fit_residual_mlp(
        z, t, linear=(weight, bias), hub=hub, config=config, seed=seed
    )
    d = z.shape[1]
    # Hidden = [relu(z W1 + b1), relu(z), relu(-z)]; out = h1 W2 + (relu(z) - relu(-z)) W + b.
    hidden_w = np.hstack([w1, np.eye(d), -np.eye(d)])
    hidden_b = np.concatenate([b1, np.zeros(2 * d)])
    out_w = np.vstack([w2, weight, -weight])
    out_b = b2 + bias
    first = dense(hidden_w / scale[:, None], hidden_b - (shift / scale) @ hidden_w)
    return Encoder(layers=(first, dense(out_w, out_b)))


HubLayers = list[tuple[F64, F64]]


def hub_layers(onnx_model: bytes) -> HubLayers | None:
    """The (weight, bias) chain of a hub graph as `classifier_model` writes it (Gemm, Relu
    between, Softmax); None for any other graph (an imported hub): the adapter then fits the
    embedding distance alone."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_model).graph
    if [n.op_type for n in graph.node if n.op_type not in ("Gemm", "Relu")] != ["Softmax"]:
        return None
    values = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in graph.initializer}
    layers: HubLayers = []
    for node in graph.node:
        if node.op_type == "Gemm":
            if any(a.name in ("transA", "transB") and a.i for a in node.attribute):
                return None
            layers.append((values[node.input[1]], values[node.input[2]]))
    return layers


def _hub_logits(
    x: F32, layers: Sequence[tuple[NDArray[np.floating], NDArray[np.floating]]]
) -> tuple[list[F32], F32]:
    """Pre-activations of the hub's hidden layers and its logits, float32."""
    pres: list[F32] = []
    h = x
    for i, (w, b) in enumerate(layers):
        z = h @ w.astype(np.float32) + b.astype(np.float32)
        if i == len(layers) - 1:
            return pres, z
        pres.append(z)
        h = np.maximum(z, 0.0)
    raise BuildError("empty hub")


def _softmax32(z: F32) -> F32:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), np.float32)


def _fit_residual_mlp(
    z: F64,
    target: F64,
    *,
    linear: tuple[F64, F64],
    hub: HubLayers | None,
    config: AdapterConfig,
    seed: int,
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """out = z W + b + relu(z W1 + b1) W2 + b2, from (W, b) = least squares and W2 = 0.

    Loss: squared error over the target's variance, plus, when the hub's weights are known,
    the cross-entropy of hub(out) against hub(target) (the v1 hub's own answers on the same
    inputs: no labels needed). The distance alone spends capacity on directions the hub
    ignores; the hub term puts it where the hub's decisions are (digits MLP: 1.4 -> ~0.3 pp).
    """
    rng = np.random.default_rng(seed)
    n, d = z.shape
    width = target.shape[1]
    zf = z.astype(np.float32)
    tf = target.astype(np.float32)
    inv_var = np.float32(1.0 / max(float(target.var(axis=0).mean()), 1e-12))
    soft = None if hub is None else _softmax32(_hub_logits(tf, hub)[1])
    hub32 = None if hub is None else [(w.astype(np.float32), b.astype(np.float32)) for w, b in hub]
    params = [
        linear[0].astype(np.float32),
        linear[1].astype(np.float32),
        (rng.standard_normal((d, config.hidden)) * np.sqrt(2.0 / d)).astype(np.float32),
        np.zeros(config.hidden, np.float32),
        np.zeros((config.hidden, width), np.float32),
        np.zeros(width, np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2 = 0.9, 0.999
    order = rng.permutation(n)
    cursor = 0
    for step in range(1, config.steps + 1):
        if cursor + MLP_BATCH > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor : cursor + MLP_BATCH]
        cursor += MLP_BATCH
        w, b, w1, b1, w2, b2 = params
        x = zf[idx]
        pre = x @ w1 + b1
        h = np.maximum(pre, 0.0)
        out = x @ w + b + h @ w2 + b2
        grad_out = (out - tf[idx]) * (2.0 * inv_var / len(idx))
        if hub32 is not None and soft is not None:
            pres, logits = _hub_logits(out, hub32)
            g = (_softmax32(logits) - soft[idx]) * (HUB_WEIGHT / len(idx))
            for i in range(len(hub32) - 1, 0, -1):
                g = (g @ hub32[i][0].T) * (pres[i - 1] > 0)
            grad_out = grad_out + g @ hub32[0][0].T
        dh = (grad_out @ w2.T) * (pre > 0)
        grads = [
            x.T @ grad_out,
            grad_out.sum(axis=0),
            x.T @ dh + MLP_DECAY * w1,
            dh.sum(axis=0),
            h.T @ grad_out + MLP_DECAY * w2,
            grad_out.sum(axis=0),
        ]
        # Cosine decay to zero: a stable end point without a schedule to tune per dataset.
        lr = np.float32(MLP_LR * 0.5 * (1 + np.cos(np.pi * step / config.steps)))
        for i, grad in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * grad
            v[i] = beta2 * v[i] + (1 - beta2) * grad * grad
            m_hat = m[i] / (1 - beta1**step)
            v_hat = v[i] / (1 - beta2**step)
            params[i] = params[i] - (lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
    w, b, w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    return w, b, w1, b1, w2, b2


def _session(path_or_bytes: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class BundleGraphs:
    """A bundle's encoder and hub on onnxruntime, files digest-checked."""

    manifest: ModelManifest
    encoder: ort.InferenceSession
    hub: ort.InferenceSession
    hub_bytes: bytes

    @classmethod
    def load(cls, bundle_dir: Path) -> BundleGraphs:
        manifest = load_manifest(bundle_dir)
        hub = verified_path(bundle_dir, manifest.hub).read_bytes()
        return cls(
            manifest, _session(verified_path(bundle_dir, manifest.encoder)), _session(hub), hub
        )

    def embed(self, x: F32) -> F32:
        return np.asarray(self.encoder.run([EMBEDDING], {ENCODER_INPUT: x})[0], np.float32)

    def hub_probabilities(self, embedding: F32) -> F32:
        """As the hub runs it: on what it was given (wire-rounded or adapted)."""
        (p,) = self.hub.run([PROBABILITIES], {EMBEDDING: embedding.astype(np.float32)})
        return np.asarray(p, np.float32)


def run_adapter(model: bytes | ort.InferenceSession, embedding: F32) -> F32:
    session = model if isinstance(model, ort.InferenceSession) else _session(model)
    (out,) = session.run([EMBEDDING], {ENCODER_INPUT: embedding.astype(np.float32)})
    return np.asarray(out, np.float32)


@dataclass(frozen=True)
class FittedAdapter:
    kind: AdapterKind
    model: bytes  # ONNX
    adapted_accuracy: float
    retrained_accuracy: float

    @property
    def gap(self) -> float:
        """Points below the retrained hub (positive: worse)."""
        return self.retrained_accuracy - self.adapted_accuracy


def fit_and_measure(
    v1: BundleGraphs,
    v2: BundleGraphs,
    pairs: F32,
    test: tuple[F32, I64],
    kind: AdapterKind,
    *,
    config: AdapterConfig = AdapterConfig(),
    seed: int = 0,
) -> FittedAdapter:
    """Fit on `pairs` (raw inputs both encoders read, plus their mixup blends);
    hub_v1(adapter(v2)) against hub_v2 on `test`."""
    pairs = with_mixup(pairs, config.mixup if kind == "mlp" else 0, seed)
    encoder = fit_adapter(
        wire_round(v2.embed(pairs)),
        wire_round(v1.embed(pairs)),
        kind,
        hub=hub_layers(v1.hub_bytes),
        config=config,
        seed=seed,
    )
    onnx_model = encoder_model(encoder, f"{v2.manifest.model_id}-to-{v1.manifest.model_id}")
    onnx_model.doc_string = f"adapter ({kind}): v2 embedding -> v1 embedding space"
    model = serialize(onnx_model)
    x_test, y_test = test
    source = wire_round(v2.embed(x_test))
    adapted = v1.hub_probabilities(run_adapter(model, source)).argmax(axis=1)
    retrained = v2.hub_probabilities(source).argmax(axis=1)
    return FittedAdapter(
        kind, model, float((adapted == y_test).mean()), float((retrained == y_test).mean())
    )


def with_mixup(x: F32, per_pair: int, seed: int) -> F32:
    """`x` and `per_pair` * len(x) convex blends of random pairs of its rows."""
    if per_pair <= 0:
        return x
    rng = np.random.default_rng(seed)
    k = per_pair * len(x)
    i, j = rng.integers(0, len(x), k), rng.integers(0, len(x), k)
    a = rng.uniform(0.0, 1.0, (k, 1)).astype(np.float32)
    return np.concatenate([x, (a * x[i] + (1 - a) * x[j]).astype(np.float32)])


def _npz(path: Path) -> tuple[F32, I64]:
    with np.load(path) as data:
        return data["X"].astype(np.float32), data["y"].astype(np.int64)


def adapt_bundle(
    v1_dir: Path,
    v2_dir: Path,
    out_dir: Path,
    *,
    kind: AdapterKind | Literal["auto"] = "auto",
    pairs: tuple[F32, I64 | None] | None = None,
    config: AdapterConfig = AdapterConfig(),
    seed: int = 0,
) -> tuple[ModelManifest, FittedAdapter]:
    """Write v1's bundle with an adapter from v2 to `out_dir` (unsigned; sign it after).

    Paired data: `pairs` (public inputs, labels optional: without them the v1 hub's answers on
    v1's embeddings label them) when given, else v2's calibration split.
    The adapter is measured on v2's test split; 80% of the pairs fit it, the rest set the
    bands of its reference statistics (held back from the fit, as the builder does).
    """
    if out_dir.resolve() in (v1_dir.resolve(), v2_dir.resolve()):
        raise BuildError("--out must be a new directory, not one of the bundles")
    v1 = BundleGraphs.load(v1_dir)
    v2 = BundleGraphs.load(v2_dir)
    m1, m2 = v1.manifest, v2.manifest
    if m1.input_dim != m2.input_dim or m1.num_classes != m2.num_classes:
        raise BuildError(
            f"bundles differ in inputs or classes ({m1.input_dim}/{m1.num_classes} vs "
            f"{m2.input_dim}/{m2.num_classes}): an adapter needs the same task"
        )
    if (m1.model_id, m1.model_version) == (m2.model_id, m2.model_version):
        raise BuildError(f"both bundles are {m1.model_id} v{m1.model_version}")
    if pairs is None:
        if m2.calibration_split is None:
            raise BuildError("the v2 bundle has no calibration split: pass paired data")
        pairs = _npz(verified_path(v2_dir, m2.calibration_split))
    x_pairs, labels = pairs
    y_pairs = (
        v1.hub_probabilities(wire_round(v1.embed(x_pairs))).argmax(axis=1).astype(np.int64)
        if labels is None
        else labels
    )
    test = _npz(verified_path(v2_dir, m2.test_split))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_pairs))
    held = order[: max(1, len(order) // 5)]
    fit = order[len(held) :]
    kinds: list[AdapterKind] = ["linear", "mlp"] if kind == "auto" else [kind]
    fitted = fit_and_measure(v1, v2, x_pairs[fit], test, kinds[0], config=config, seed=seed)
    if len(kinds) > 1 and fitted.gap > LINEAR_GOOD_ENOUGH:
        mlp = fit_and_measure(v1, v2, x_pairs[fit], test, "mlp", config=config, seed=seed)
        fitted = mlp if mlp.adapted_accuracy >= fitted.adapted_accuracy else fitted

    session = _session(fitted.model)
    fit_adapted = run_adapter(session, wire_round(v2.embed(x_pairs[fit])))
    held_adapted = run_adapter(session, wire_round(v2.embed(x_pairs[held])))
    statistics = embedding_statistics(
        fit_adapted,
        y_pairs[fit],
        threshold_embedding=held_adapted,
        threshold_labels=v1.hub_probabilities(held_adapted).argmax(axis=1).astype(np.int64),
        seed=seed,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    source = (m2.model_id, m2.model_version)
    kept = tuple(a for a in m1.adapters if (a.source_model_id, a.source_model_version) != source)
    replaced = {f.path for a in m1.adapters if a not in kept for f in (a.model, a.calibration)}
    for artifact in artifacts(m1):
        if artifact.path not in replaced:
            shutil.copyfile(verified_path(v1_dir, artifact), out_dir / artifact.path)
    stem = f"adapter-{m2.model_id}-v{m2.model_version}"
    files = {f"{stem}.onnx": fitted.model, f"{stem}.npz": npz_bytes(dict(statistics))}
    written: dict[str, ArtifactFile] = {}
    for name, content in files.items():
        write_atomic(out_dir / name, content)
        written[name] = ArtifactFile(path=name, sha256=sha256_file(out_dir / name))
    entry = AdapterEntry(
        source_model_id=m2.model_id,
        source_model_version=m2.model_version,
        input_dim=m2.embedding_dim,
        wire_dtype=m2.wire_dtype,
        kind=fitted.kind,
        model=written[f"{stem}.onnx"],
        calibration=written[f"{stem}.npz"],
        metrics=AdapterMetrics(
            adapted_hub_accuracy=fitted.adapted_accuracy,
            retrained_hub_accuracy=fitted.retrained_accuracy,
        ),
    )
    manifest = m1.model_copy(update={"adapters": (*kept, entry)})
    write_manifest(out_dir, manifest)
    return manifest, fitted
