"""`escalade models import`: a bundle from ONNX files exported elsewhere (skl2onnx, PyTorch).

The three graphs are checked (one float input each; the encoder one float output; head and hub
one float (N, classes) output, other outputs such as skl2onnx's label are dropped), their
tensors renamed to the names the runtimes use (``input`` -> ``embedding`` -> ``probabilities``),
and run on the calibration data: probabilities must be finite and sum to one. The data (npz
with X, y) is split in two, stratified: one half calibrates the router and fits the reference
statistics (fit on one half of it, bands on the other, as the builder does), the other is the
bundle's test split and gives the manifest's metrics. Refusals raise `ImportRefused` with a
stable ``import_*`` code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from escalade.modelbuild.bundle import (
    CALIBRATION_FILE,
    CALIBRATION_SPLIT_FILE,
    ENCODER_FILE,
    HEAD_FILE,
    HUB_FILE,
    TEST_FILE,
    WIRE_DTYPE,
)
from escalade.modelbuild.evaluate import OnnxRunner, measure
from escalade.modelbuild.files import npz_bytes, write_atomic
from escalade.modelbuild.layers import wire_round
from escalade.modelbuild.router import calibrate_router
from escalade.modelbuild.stats import embedding_statistics
from escalade.modelbuild.train import F32, I64
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    MANIFEST_NAME,
    PROBABILITIES,
    ArtifactFile,
    ModelManifest,
    sha256_file,
    write_manifest,
)
from escalade_protocol.errors import ErrorCode, ProtocolError

_FLOATS = (TensorProto.FLOAT,)
_PROBABILITY_SUM_TOLERANCE = 1e-3


class ImportRefused(ProtocolError):
    """An import failed a check; `code` is one of the ``import_*`` error codes."""


@dataclass(frozen=True)
class _Graph:
    model: onnx.ModelProto
    width_in: int
    width_out: int


def _dim(value: onnx.ValueInfoProto) -> int | None:
    """The last dimension of a rank-2 float tensor; None for anything else."""
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or t.elem_type not in _FLOATS:
        return None
    dims = t.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    return int(dims[1].dim_value)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def _normalised(path: Path, role: str, source: str, target: str) -> _Graph:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # OSError, the checker's errors, protobuf's DecodeError
        raise ImportRefused(ErrorCode.IMPORT_BAD_ONNX, f"{role} {path}: {exc}") from None
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or _dim(inputs[0]) is None:
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_IO,
            f"{role} must take one float (N, D) input, has " + ", ".join(i.name for i in inputs),
        )
    outputs = [o for o in graph.output if _dim(o) is not None]
    if len(outputs) != 1:
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_IO,
            f"{role} must give one float (N, K) output, has "
            + ", ".join(o.name for o in graph.output),
        )
    width_in, width_out = _dim(inputs[0]), _dim(outputs[0])
    assert width_in is not None
    assert width_out is not None
    kept = outputs[0]
    del graph.output[:]
    graph.output.append(kept)
    _rename(graph, inputs[0].name, source)
    _rename(graph, kept.name, target)
    return _Graph(model, width_in, width_out)


def _calibration(path: Path, input_dim: int, num_classes: int) -> tuple[F32, I64]:
    try:
        with np.load(path, allow_pickle=False) as data:
            x = np.asarray(data["X"], np.float32)
            y = np.asarray(data["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_CALIBRATION, f"{path}: needs arrays X and y ({exc})"
        ) from None
    if x.ndim != 2 or x.shape[1] != input_dim or y.shape != (len(x),):
        raise ImportRefused(
            ErrorCode.IMPORT_SHAPE_MISMATCH,
            f"calibration X is {x.shape} with y {y.shape}; the encoder takes (N, {input_dim})",
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_CALIBRATION, f"labels must be integers in [0, {num_classes})"
        )
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    if len(x) < 40 or counts.min() < 4 or not np.isfinite(x).all():
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_CALIBRATION,
            "calibration needs finite X, at least 40 rows and 4 of every class "
            f"(has {len(x)} rows, fewest {int(counts.min())} of a class)",
        )
    return x, y.astype(np.int64)


def _check_probabilities(role: str, p: F32, classes: int) -> None:
    if p.shape[1:] != (classes,) or not np.isfinite(p).all():
        raise ImportRefused(ErrorCode.IMPORT_BAD_OUTPUT, f"{role} gives non-finite output")
    if np.abs(p.sum(axis=1) - 1).max() > _PROBABILITY_SUM_TOLERANCE or p.min() < 0:
        raise ImportRefused(
            ErrorCode.IMPORT_BAD_OUTPUT,
            f"{role} output is not a probability distribution (end the graph with Softmax)",
        )


def import_bundle(
    encoder: Path,
    head: Path,
    hub: Path,
    calibration: Path,
    out_dir: Path,
    *,
    model_id: str | None = None,
    model_version: int = 1,
    seed: int = 0,
) -> ModelManifest:
    """Write a bundle to `out_dir` from the three ONNX files and labelled calibration data."""
    from sklearn.model_selection import train_test_split

    model_id = model_id or re.sub(r"[^a-z0-9._-]", "-", calibration.stem.lower())[:50] + "-import"
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", model_id):
        raise ImportRefused(ErrorCode.IMPORT_BAD_IO, f"model id {model_id!r} is not a valid id")
    enc = _normalised(encoder, "encoder", ENCODER_INPUT, EMBEDDING)
    edge = _normalised(head, "head", EMBEDDING, PROBABILITIES)
    big = _normalised(hub, "hub", EMBEDDING, PROBABILITIES)
    if not enc.width_out == edge.width_in == big.width_in:
        raise ImportRefused(
            ErrorCode.IMPORT_SHAPE_MISMATCH,
            f"encoder gives {enc.width_out} dimensions; head takes {edge.width_in}, "
            f"hub {big.width_in}",
        )
    if edge.width_out != big.width_out or edge.width_out < 2:
        raise ImportRefused(
            ErrorCode.IMPORT_SHAPE_MISMATCH,
            f"head gives {edge.width_out} classes, hub {big.width_out}",
        )
    classes = edge.width_out
    x, y = _calibration(calibration, enc.width_in, classes)
    models = {
        ENCODER_FILE: enc.model.SerializeToString(deterministic=True),
        HEAD_FILE: edge.model.SerializeToString(deterministic=True),
        HUB_FILE: big.model.SerializeToString(deterministic=True),
    }
    try:
        runner = OnnxRunner(models[ENCODER_FILE], models[HEAD_FILE], models[HUB_FILE])
        embedding = runner.embed(x)
        edge_p = runner.edge_probabilities(embedding)
        hub_p = runner.hub_probabilities(embedding)
    except Exception as exc:  # ONNX Runtime raises its own types (Fail, InvalidArgument...)
        raise ImportRefused(ErrorCode.IMPORT_BAD_OUTPUT, f"cannot run: {exc}") from None
    if embedding.shape != (len(x), enc.width_out) or not np.isfinite(embedding).all():
        raise ImportRefused(ErrorCode.IMPORT_BAD_OUTPUT, "encoder gives non-finite embeddings")
    _check_probabilities("head", edge_p, classes)
    _check_probabilities("hub", hub_p, classes)

    idx_cal, idx_test = train_test_split(
        np.arange(len(x)), test_size=0.5, stratify=y, random_state=seed
    )
    router = calibrate_router(edge_p[idx_cal], hub_p[idx_cal], y[idx_cal])
    # The hub checks what it receives (float16-rounded); fit on one half of the calibration
    # part and set bands on the other, with the hub's predicted classes there.
    fit, held = idx_cal[::2], idx_cal[1::2]
    wire = wire_round(embedding)
    statistics = embedding_statistics(
        wire[fit],
        y[fit],
        threshold_embedding=wire[held],
        threshold_labels=hub_p[held].argmax(axis=1).astype(np.int64),
        seed=seed,
    )
    metrics = measure(runner, x[idx_test], y[idx_test], router)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    contents = {
        **models,
        CALIBRATION_FILE: npz_bytes(dict(statistics)),
        TEST_FILE: npz_bytes({"X": x[idx_test], "y": y[idx_test]}, compress=True),
        CALIBRATION_SPLIT_FILE: npz_bytes({"X": x[idx_cal], "y": y[idx_cal]}, compress=True),
    }
    files: dict[str, ArtifactFile] = {}
    for name, content in contents.items():
        write_atomic(out_dir / name, content)
        files[name] = ArtifactFile(path=name, sha256=sha256_file(out_dir / name))
    manifest = ModelManifest(
        model_id=model_id,
        model_version=model_version,
        dataset=f"import:{calibration.name}",
        seed=seed,
        input_dim=enc.width_in,
        embedding_dim=enc.width_out,
        num_classes=classes,
        wire_dtype=WIRE_DTYPE,
        encoder=files[ENCODER_FILE],
        head=files[HEAD_FILE],
        hub=files[HUB_FILE],
        calibration=files[CALIBRATION_FILE],
        test_split=files[TEST_FILE],
        calibration_split=files[CALIBRATION_SPLIT_FILE],
        router=router,
        metrics=metrics,
    )
    write_manifest(out_dir, manifest)
    return manifest
