"""Hand-built ONNX graphs for the fitted weights.

Built with onnx.helper rather than skl2onnx so the graphs are exactly Gemm/Relu/Softmax with
the shared tensor names, load on any onnxruntime >= 1.18, and serialise byte-identically.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from escalade.modelbuild.train import Classifier, Dense, Encoder
from escalade_protocol.artifacts import EMBEDDING, ENCODER_INPUT, PROBABILITIES

OPSET = 17
# onnxruntime 1.18 reads IR version 9 (ONNX 1.15); newer IR versions would lock it out.
IR_VERSION = 9
BATCH = "N"
PRODUCER = "escalade.modelbuild"


def _value(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, width])


def _gemm(
    prefix: str, layer: Dense, source: str, target: str
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    weight, bias = f"{prefix}.weight", f"{prefix}.bias"
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(layer.weight, np.float32), weight),
        numpy_helper.from_array(np.ascontiguousarray(layer.bias, np.float32), bias),
    ]
    return helper.make_node("Gemm", [source, weight, bias], [target], name=prefix), initializers


def _model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        doc_string=doc,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def encoder_model(encoder: Encoder, name: str) -> onnx.ModelProto:
    """input -> Gemm (-> Relu -> Gemm)* (-> Relu when `relu_out`) -> embedding."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    source = ENCODER_INPUT
    last = len(encoder.layers) - 1
    for i, layer in enumerate(encoder.layers):
        relu = i < last or encoder.relu_out
        # One layer keeps the name "encoder" (PCA bundles stay byte-identical).
        prefix = "encoder" if last == 0 else f"encoder{i}"
        target = EMBEDDING if i == last and not relu else f"{prefix}.linear"
        node, layer_inits = _gemm(prefix, layer, source, target)
        nodes.append(node)
        inits.extend(layer_inits)
        source = target
        if relu:
            out = EMBEDDING if i == last else f"{prefix}.relu"
            nodes.append(helper.make_node("Relu", [source], [out], name=f"{prefix}.relu"))
            source = out
    graph = helper.make_graph(
        nodes,
        name,
        [_value(ENCODER_INPUT, int(encoder.layers[0].weight.shape[0]))],
        [_value(EMBEDDING, int(encoder.layers[-1].weight.shape[1]))],
        initializer=inits,
    )
    doc = (
        "centring, PCA projection and scaling folded into one Gemm"
        if encoder.linear
        else "supervised ReLU encoder with a narrow bottleneck (the private recipe)"
    )
    return _model(graph, doc)


def classifier_model(classifier: Classifier, name: str, doc: str) -> onnx.ModelProto:
    """embedding -> Gemm (-> Relu -> Gemm)* -> Softmax -> probabilities."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    source = EMBEDDING
    for i, layer in enumerate(classifier.layers):
        node, layer_inits = _gemm(f"dense{i}", layer, source, f"logits{i}")
        nodes.append(node)
        inits.extend(layer_inits)
        source = f"logits{i}"
        if i < len(classifier.layers) - 1:
            nodes.append(helper.make_node("Relu", [source], [f"relu{i}"], name=f"relu{i}"))
            source = f"relu{i}"
    nodes.append(helper.make_node("Softmax", [source], [PROBABILITIES], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        name,
        [_value(EMBEDDING, classifier.input_dim)],
        [_value(PROBABILITIES, classifier.num_classes)],
        initializer=inits,
    )
    return _model(graph, doc)


def serialize(model: onnx.ModelProto) -> bytes:
    data: bytes = model.SerializeToString(deterministic=True)
    return data
