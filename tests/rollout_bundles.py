"""Bundle variants for rollout tests, made from the session's real bundle: a signed copy, a
retrained-looking head (weights nudged: a different, valid model), and a head whose output
has one class too many (it fails warm-up)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from escalade_protocol.artifacts import MANIFEST_NAME, sha256_file
from escalade_protocol.bundles import sign_bundle
from escalade_protocol.keys import Ed25519PrivateKey


def _set_head(bundle: Path, model: onnx.ModelProto) -> None:
    onnx.save(model, str(bundle / "head.onnx"))
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["head"]["sha256"] = sha256_file(bundle / "head.onnx")
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def signed_copy(source: Path, out: Path, key: Ed25519PrivateKey) -> Path:
    shutil.copytree(source, out)
    (out / "manifest.sig").unlink(missing_ok=True)
    sign_bundle(out, key)
    return out


def nudged_head(source: Path, out: Path, key: Ed25519PrivateKey, *, scale: float) -> Path:
    """The head's weights scaled by `scale`: a valid head with other answers near the margin."""
    shutil.copytree(source, out)
    model = onnx.load(str(out / "head.onnx"))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(values * np.float32(scale), init.name))
    _set_head(out, model)
    sign_bundle(out, key)
    return out


def wide_head(source: Path, out: Path, key: Ed25519PrivateKey) -> Path:
    """A head that outputs num_classes + 1 probabilities: loads fine, fails warm-up."""
    shutil.copytree(source, out)
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    dim, classes = manifest["embedding_dim"], manifest["num_classes"] + 1
    weights = numpy_helper.from_array(np.ones((dim, classes), np.float32) / dim, "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "wide_head",
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [None, dim])],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, classes])],
        initializer=[weights],
    )
    head = onnx.load(str(source / "head.onnx"))
    model = helper.make_model(graph, opset_imports=head.opset_import)
    model.ir_version = head.ir_version
    _set_head(out, model)
    sign_bundle(out, key)
    return out


def static_batch_head(source: Path, out: Path, key: Ed25519PrivateKey, *, batch: int) -> Path:
    """A head exported with a fixed batch size (a classic export bug): it passes a warm-up of
    exactly `batch` rows and fails on a request of one."""
    shutil.copytree(source, out)
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    dim, classes = manifest["embedding_dim"], manifest["num_classes"]
    weights = numpy_helper.from_array(np.eye(dim, classes, dtype=np.float32), "W")
    shape = numpy_helper.from_array(np.array([batch, classes], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["soft"], axis=-1),
            helper.make_node("Reshape", ["soft", "shape"], ["probabilities"]),
        ],
        "static_batch_head",
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [None, dim])],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, classes])],
        initializer=[weights, shape],
    )
    head = onnx.load(str(source / "head.onnx"))
    model = helper.make_model(graph, opset_imports=head.opset_import)
    model.ir_version = head.ir_version
    _set_head(out, model)
    sign_bundle(out, key)
    return out
