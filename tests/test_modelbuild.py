"""The model bundle builder: real builds, checked with onnx and onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from escalade.modelbuild import DatasetError, build_bundle
from escalade.modelbuild.datasets import FASHION_MNIST_DIR
from escalade.modelbuild.layers import Classifier, Dense
from escalade.modelbuild.router import calibrate_router, cascade
from escalade.modelbuild.train import fit_temperature
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    ModelManifest,
    load_manifest,
    verified_path,
)

ONNX_FILES = ("encoder.onnx", "head.onnx", "hub.onnx")


class Built:
    def __init__(self, path: Path, manifest: ModelManifest, steps: list[tuple[str, int, int]]):
        self.path = path
        self.manifest = manifest
        self.steps = steps


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("modelbuild") / "bundle"  # not there yet: the builder makes it
    steps: list[tuple[str, int, int]] = []
    manifest = build_bundle("digits", out, seed=0, on_step=lambda *s: steps.append(s))
    return Built(out, manifest, steps)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_every_onnx_file_passes_the_full_checker(built: Built) -> None:
    for name in ONNX_FILES:
        model = onnx.load(str(built.path / name))
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version <= 9
        assert [o.version for o in model.opset_import if o.domain == ""] == [17]


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_loads_each_graph_with_the_shared_names_and_shapes(
    built: Built, batch: int
) -> None:
    m = built.manifest
    x = np.load(built.path / "test.npz")["X"][:batch]
    assert x.dtype == np.float32
    assert x.shape == (batch, m.input_dim)
    encoder, head, hub = (session(built.path / name) for name in ONNX_FILES)
    assert [i.name for i in encoder.get_inputs()] == [ENCODER_INPUT]
    assert [o.name for o in encoder.get_outputs()] == [EMBEDDING]
    (embedding,) = encoder.run(None, {ENCODER_INPUT: x})
    assert embedding.shape == (batch, m.embedding_dim)
    assert embedding.dtype == np.float32
    for model in (head, hub):
        assert [i.name for i in model.get_inputs()] == [EMBEDDING]
        assert [o.name for o in model.get_outputs()] == [PROBABILITIES]
        (probs,) = model.run(None, {EMBEDDING: embedding})
        assert probs.shape == (batch, m.num_classes)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs >= 0).all()


def test_manifest_on_disk_matches_the_returned_one_and_every_digest(built: Built) -> None:
    m = load_manifest(built.path)
    assert m == built.manifest
    assert m.model_id == "digits-pca32"
    assert (m.dataset, m.seed, m.input_dim, m.embedding_dim, m.num_classes) == (
        "digits",
        0,
        64,
        32,
        10,
    )
    assert m.wire_dtype == "float16"
    assert m.calibration_split is not None
    for artifact in (m.encoder, m.head, m.hub, m.calibration, m.test_split, m.calibration_split):
        verified_path(built.path, artifact)  # raises on a digest mismatch


def test_calibration_split_holds_the_raw_inputs_the_router_was_set_on(built: Built) -> None:
    m = built.manifest
    assert m.calibration_split is not None
    with np.load(verified_path(built.path, m.calibration_split)) as data:
        assert set(data.files) == {"X", "y"}
        x, y = data["X"], data["y"]
    assert x.dtype == np.float32
    assert x.shape == (359, m.input_dim)
    assert y.dtype == np.int64
    assert set(y.tolist()) == set(range(m.num_classes))
    with np.load(built.path / "test.npz") as test:
        # Disjoint from the test split (digits has a few duplicate images, hence "almost").
        shared = {row.tobytes() for row in x} & {row.tobytes() for row in test["X"]}
        assert len(shared) <= 2


def test_metrics_are_reproduced_by_onnxruntime_from_the_test_split(built: Built) -> None:
    m = built.manifest
    data = np.load(built.path / "test.npz")
    x, y = data["X"], data["y"]
    assert y.dtype == np.int64
    assert len(x) == len(y) == 360  # 20% of digits' 1797 examples
    encoder, head, hub = (session(built.path / name) for name in ONNX_FILES)
    (embedding,) = encoder.run(None, {ENCODER_INPUT: x})
    (edge,) = head.run(None, {EMBEDDING: embedding})
    wire = embedding.astype(np.float16).astype(np.float32)
    (remote,) = hub.run(None, {EMBEDDING: wire})
    escalated = edge.max(axis=1) < m.router.threshold
    answer = np.where(escalated, remote.argmax(axis=1), edge.argmax(axis=1))
    assert m.metrics.edge_accuracy == pytest.approx((edge.argmax(axis=1) == y).mean(), abs=1e-9)
    assert m.metrics.hub_accuracy == pytest.approx((remote.argmax(axis=1) == y).mean(), abs=1e-9)
    assert m.metrics.cascade_accuracy == pytest.approx((answer == y).mean(), abs=1e-9)
    assert m.metrics.escalation_rate == pytest.approx(escalated.mean(), abs=1e-9)


def test_cascade_keeps_hub_accuracy_while_escalating_a_minority(built: Built) -> None:
    metrics = built.manifest.metrics
    assert metrics.hub_accuracy > metrics.edge_accuracy
    assert metrics.cascade_accuracy >= metrics.hub_accuracy - 0.01
    assert 0.0 < metrics.escalation_rate < 0.5
    router = built.manifest.router
    assert 0.0 < router.threshold < 1.0
    assert 0.0 < router.expected_escalation_rate < 0.5


def test_calibration_statistics_are_well_formed(built: Built) -> None:
    m = built.manifest
    stats = np.load(built.path / "calibration.npz")
    e, c = m.embedding_dim, m.num_classes
    assert set(stats.files) >= {
        "mean",
        "covariance",
        "precision",
        "class_means",
        "norm_low",
        "norm_high",
        "mahalanobis_threshold",
    }
    assert all(stats[k].dtype == np.float64 for k in stats.files)
    assert stats["mean"].shape == (e,)
    assert stats["class_means"].shape == (c, e)
    cov, precision = stats["covariance"], stats["precision"]
    assert cov.shape == precision.shape == (e, e)
    np.testing.assert_allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0
    np.testing.assert_allclose(precision @ cov, np.eye(e), atol=1e-8)
    assert 0 < stats["norm_low"] < stats["norm_high"]
    assert stats["mahalanobis_threshold"] > 0


def test_progress_reports_every_stage_and_each_hub_epoch(built: Built) -> None:
    descriptions = [d for d, _, _ in built.steps]
    for stage in ("loading dataset", "fitting encoder (PCA)", "exporting ONNX", "writing bundle"):
        assert stage in descriptions
    epochs = [(done, total) for d, done, total in built.steps if d == "training hub model"]
    total = epochs[-1][1]
    assert total > 1
    assert [done for done, _ in epochs[1:]] == list(range(1, total + 1))
    assert all(0 <= done <= total for _, done, total in built.steps)


def test_unknown_dataset_raises_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'no-such-data'.*digits"):
        build_bundle("no-such-data", tmp_path)
    assert not any(tmp_path.iterdir())


def test_same_seed_gives_identical_bytes(built: Built, tmp_path: Path) -> None:
    again = build_bundle("digits", tmp_path, seed=0)
    assert again == built.manifest
    names = (*ONNX_FILES, "calibration.npz", "test.npz", "calibration_split.npz", "manifest.json")
    for name in names:
        assert (tmp_path / name).read_bytes() == (built.path / name).read_bytes(), name


def test_router_picks_the_least_escalation_within_half_a_point() -> None:
    # 200 examples; the hub is always right, the edge is wrong on the 4 least confident ones
    # and on one confident one, so escalating exactly the bottom 4 loses 1 example (0.5 point).
    n = 200
    y = np.arange(n, dtype=np.int64) % 2
    confidence = np.linspace(0.55, 0.99, n)
    edge_pred = y.copy()
    edge_pred[[0, 1, 2, 3, 150]] ^= 1
    edge = np.zeros((n, 2))
    edge[np.arange(n), edge_pred] = confidence
    edge[np.arange(n), 1 - edge_pred] = 1 - confidence
    hub = np.eye(2)[y]
    router = calibrate_router(edge, hub, y)
    assert router.threshold == pytest.approx(confidence[4])
    assert router.expected_escalation_rate == pytest.approx(4 / n)
    assert router.expected_accuracy == pytest.approx(1 - 1 / n)
    predictions, escalated = cascade(edge, hub, router.threshold)
    assert escalated.sum() == 4
    assert (predictions != y).sum() == 1


def test_temperature_scaling_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3)).astype(np.float32)
    weight = np.array([[2.0, -1.0, 0.0], [0.0, 3.0, -2.0], [1.0, 1.0, 1.0]], np.float32)
    clf = Classifier((Dense(weight, np.zeros(3, np.float32)),))
    # Labels drawn from softmax(logits / 2): the classifier is overconfident by a factor 2.
    probs = clf.with_temperature(2.0).probabilities(x)
    y = np.array([rng.choice(3, p=p) for p in probs], dtype=np.int64)
    assert fit_temperature(clf, x, y) == pytest.approx(2.0, rel=0.1)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_reduced_fashion_mnist_build(tmp_path: Path) -> None:
    """The large-data recipe end to end, on 3000 training images to stay quick."""
    m = build_bundle("fashion-mnist", tmp_path, seed=0, max_train=3000)
    assert (m.model_id, m.input_dim, m.embedding_dim, m.num_classes) == (
        "fashion-mnist-pca64",
        784,
        64,
        10,
    )
    head = onnx.load(str(tmp_path / "head.onnx"))
    assert [n.op_type for n in head.graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    assert m.calibration_split is not None
    with np.load(verified_path(tmp_path, m.calibration_split)) as data:
        assert data["X"].shape == (10000, 784)
        assert data["y"].shape == (10000,)
    with np.load(verified_path(tmp_path, m.test_split)) as data:
        assert data["X"].shape == (10000, 784)  # the official test split
    assert m.metrics.edge_accuracy > 0.75
    assert m.metrics.hub_accuracy > 0.75
