"""The learned router: P(local answer right) from the head's signals and the embedding norm.

A logistic regression on five features (max probability, margin, minus entropy, embedding L2
norm, log(1 - max probability)) fitted on the calibration split, exported as a hand-built ONNX
graph (TopK/MatMul/ReduceSum/ReduceL2/Log -> Concat -> Gemm -> Sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from edge_agent.router import LEARNED_OUTPUT
from escalade.modelbuild.files import write_atomic
from escalade.modelbuild.onnx_export import BATCH, IR_VERSION, OPSET, PRODUCER, serialize
from escalade.modelbuild.router import calibrate_router
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    ArtifactFile,
    BundleError,
    ModelManifest,
    load_manifest,
    sha256_file,
    verified_path,
    write_manifest,
)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
ROUTER_FILE = "router.onnx"
LOG_FLOOR = 1e-12  # probabilities are clipped here before a log
TAIL_FLOOR = 1e-4  # log(1 - max probability + TAIL_FLOOR) stays finite at max probability 1
FEATURES = ("max_probability", "margin", "neg_entropy", "embedding_norm", "log_tail")
ROUTER_C = 1.0


@dataclass(frozen=True)
class LearnedRouter:
    weight: F32  # [features]
    bias: float

    def predict(self, probabilities: F32, embedding: F32) -> F64:
        z = router_features(probabilities, embedding) @ self.weight.astype(np.float64) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-z)), np.float64)


def router_features(probabilities: NDArray[np.floating], embedding: NDArray[np.floating]) -> F64:
    p = np.asarray(probabilities, np.float64)
    top2 = -np.sort(-p, axis=1)[:, :2]
    neg_entropy = (p * np.log(np.clip(p, LOG_FLOOR, 1.0))).sum(axis=1)
    norm = np.linalg.norm(np.asarray(embedding, np.float64), axis=1)
    tail = np.log(1.0 - top2[:, 0] + TAIL_FLOOR)
    return np.column_stack([top2[:, 0], top2[:, 0] - top2[:, 1], neg_entropy, norm, tail])


def fit_learned_router(
    probabilities: F32, embedding: F32, local_correct: NDArray[np.bool_]
) -> LearnedRouter:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = router_features(probabilities, embedding)
    target = local_correct.astype(np.int64)
    if target.min() == target.max():  # one class only: a constant router
        return LearnedRouter(np.zeros(len(FEATURES), np.float32), 10.0 if target[0] else -10.0)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=ROUTER_C, max_iter=5000).fit(scaler.transform(x), target)
    weight = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - scaler.mean_ @ weight)
    return LearnedRouter(np.asarray(weight, np.float32), bias)


def _const(name: str, value: NDArray[np.generic]) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def learned_router_model(
    router: LearnedRouter, num_classes: int, embedding_dim: int
) -> onnx.ModelProto:
    node = helper.make_node
    inits = [
        _const("k2", np.array([2], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("top_to_max_margin", np.array([[1.0, 1.0], [0.0, -1.0]], np.float32)),
        _const("log_floor", np.array(LOG_FLOOR, np.float32)),
        _const("one", np.array(1.0, np.float32)),
        _const("one_plus_tail_floor", np.array(1.0 + TAIL_FLOOR, np.float32)),
        _const("router.weight", router.weight.reshape(-1, 1).astype(np.float32)),
        _const("router.bias", np.array([router.bias], np.float32)),
    ]
    nodes = [
        node("TopK", [PROBABILITIES, "k2"], ["top2", "top2_index"], axis=1),
        node("MatMul", ["top2", "top_to_max_margin"], ["max_margin"]),  # [max, max - second]
        node("Clip", [PROBABILITIES, "log_floor", "one"], ["clipped"]),
        node("Log", ["clipped"], ["log_p"]),
        node("Mul", [PROBABILITIES, "log_p"], ["p_log_p"]),
        node("ReduceSum", ["p_log_p", "axis1"], ["neg_entropy"], keepdims=1),
        node("ReduceL2", [EMBEDDING], ["norm"], axes=[1], keepdims=1),
        node("ReduceMax", [PROBABILITIES], ["max_p"], axes=[1], keepdims=1),
        node("Sub", ["one_plus_tail_floor", "max_p"], ["tail"]),
        node("Log", ["tail"], ["log_tail"]),
        node("Concat", ["max_margin", "neg_entropy", "norm", "log_tail"], ["features"], axis=1),
        node("Gemm", ["features", "router.weight", "router.bias"], ["logit"]),
        node("Sigmoid", ["logit"], [LEARNED_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "learned-router",
        [
            helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [BATCH, embedding_dim]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [BATCH, num_classes]),
        ],
        [helper.make_tensor_value_info(LEARNED_OUTPUT, TensorProto.FLOAT, [BATCH, 1])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        doc_string="learned router: logistic regression on confidence signals -> P(local right)",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def run_learned_router(model: bytes, probabilities: F32, embedding: F32) -> F32:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    inputs = {EMBEDDING: embedding, PROBABILITIES: probabilities}
    return np.asarray(session.run([LEARNED_OUTPUT], inputs)[0], np.float32)[:, 0]


def add_learned_router(
    bundle_dir: Path,
    *,
    select: Literal["auto", "learned", "keep"] = "auto",
    calibration: tuple[F32, NDArray[np.int64]] | None = None,
) -> ModelManifest:
    """Fit the learned router on the bundle's calibration split, write router.onnx and the manifest.

    select: "learned" routes on it; "keep" keeps the current signal; "auto" routes on it only if,
    for the manifest's target, it escalates less on the calibration split.
    `calibration` (X, y) stands in for a bundle built without calibration_split.npz.
    """
    from escalade.modelbuild.evaluate import OnnxRunner

    manifest = load_manifest(bundle_dir)
    if calibration is None:
        if manifest.calibration_split is None:
            raise BundleError(f"{bundle_dir}: the manifest has no calibration split")
        data = np.load(verified_path(bundle_dir, manifest.calibration_split))
        calibration = (np.asarray(data["X"], np.float32), np.asarray(data["y"], np.int64))
    x, y = calibration
    runner = OnnxRunner(
        *(
            verified_path(bundle_dir, a).read_bytes()
            for a in (manifest.encoder, manifest.head, manifest.hub)
        )
    )
    embedding = runner.embed(x)
    edge = runner.edge_probabilities(embedding)
    hub = runner.hub_probabilities(embedding)
    router = fit_learned_router(edge, embedding, edge.argmax(axis=1) == y)
    model = serialize(learned_router_model(router, manifest.num_classes, manifest.embedding_dim))
    scores = run_learned_router(model, edge, embedding)
    current = manifest.router
    learned = calibrate_router(
        edge,
        hub,
        y,
        signal="learned",
        scores=scores,
        target=current.target,
        target_value=current.target_value,
    )
    use = select == "learned" or (
        select == "auto" and learned.expected_escalation_rate < current.expected_escalation_rate
    )
    write_atomic(bundle_dir / ROUTER_FILE, model)
    artifact = ArtifactFile(path=ROUTER_FILE, sha256=sha256_file(bundle_dir / ROUTER_FILE))
    updated = manifest.model_copy(
        update={"router_model": artifact, "router": learned if use else current}
    )
    write_manifest(bundle_dir, updated)
    return updated
