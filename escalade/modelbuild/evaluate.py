"""Running the exported graphs with onnxruntime, so reported numbers are the runtime's own."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from escalade.modelbuild.layers import wire_round
from escalade.modelbuild.router import cascade
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    BundleMetrics,
    RouterCalibration,
)

F32 = NDArray[np.float32]


class OnnxRunner:
    """The three bundle graphs on onnxruntime's CPU provider."""

    def __init__(self, encoder: bytes, head: bytes, hub: bytes) -> None:
        options = ort.SessionOptions()
        # One thread: the same summation order on every machine, and no oversubscription.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1

        def session(model: bytes) -> ort.InferenceSession:
            return ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )

        self._encoder = session(encoder)
        self._head = session(head)
        self._hub = session(hub)

    def embed(self, x: F32) -> F32:
        return np.asarray(self._encoder.run([EMBEDDING], {ENCODER_INPUT: x})[0], np.float32)

    def edge_probabilities(self, embedding: F32) -> F32:
        return np.asarray(self._head.run([PROBABILITIES], {EMBEDDING: embedding})[0], np.float32)

    def edge_latency_us(self, x: F32, repeats: int = 3) -> float:
        """Median microseconds for one input through encoder and head (batch 1, one thread)."""
        times: list[float] = []
        for _ in range(repeats):
            for row in x:
                single = row[None, :]
                started = time.perf_counter()
                self.edge_probabilities(self.embed(single))
                times.append(time.perf_counter() - started)
        return float(np.median(times)) * 1e6

    def hub_probabilities(self, embedding: F32) -> F32:
        """Applies the float16 wire round trip first, as an escalation would."""
        inputs = {EMBEDDING: wire_round(embedding)}
        return np.asarray(self._hub.run([PROBABILITIES], inputs)[0], np.float32)


def measure(
    runner: OnnxRunner, x: F32, y: NDArray[np.int64], router: RouterCalibration
) -> BundleMetrics:
    embedding = runner.embed(x)
    edge = runner.edge_probabilities(embedding)
    hub = runner.hub_probabilities(embedding)
    predictions, escalated = cascade(edge, hub, router.threshold)
    return BundleMetrics(
        edge_accuracy=float((edge.argmax(axis=1) == y).mean()),
        hub_accuracy=float((hub.argmax(axis=1) == y).mean()),
        cascade_accuracy=float((predictions == y).mean()),
        escalation_rate=float(escalated.mean()),
    )
