"""Real envelope sizes and onnxruntime timings of the bundle's graphs."""

from __future__ import annotations

import time
import uuid

import numpy as np
from numpy.typing import NDArray

from escalade.cascade_bench.report import Timings, Wire
from escalade.modelbuild.evaluate import OnnxRunner
from escalade_protocol import envelope
from escalade_protocol.keys import HUB_KEY_ID_SIZE, Ed25519PrivateKey, X25519PrivateKey
from escalade_protocol.tensor import Tensor

F32 = NDArray[np.float32]
RAW_ENCODING = (
    "raw input as uint8, one byte per value (the datasets' native pixel encoding), sealed in "
    "the same envelope: same header, HPKE overhead and signature"
)
TIMED_INPUTS = 300


def wire_sizes(model_id: str, embedding: F32, input_dim: int, wire_dtype: str) -> Wire:
    """Seal one embedding for real; a raw upload pays the same overhead around its bytes."""
    header = envelope.EnvelopeHeader(
        device_id=uuid.UUID(int=0),
        model_id=model_id,
        model_version=1,
        seq=1,
        timestamp_ms=0,
        nonce=bytes(envelope.NONCE_SIZE),
        hub_key_id=bytes(HUB_KEY_ID_SIZE),
    )
    payload = Tensor.from_numpy(embedding, wire_dtype)
    sealed = envelope.seal(
        header,
        payload,
        device_key=Ed25519PrivateKey.generate(),
        hub_key=X25519PrivateKey.generate().public_key(),
    )
    overhead = len(sealed) - len(payload.data)
    return Wire(
        embedding_envelope_bytes=len(sealed),
        raw_envelope_bytes=overhead + input_dim,
        raw_encoding=RAW_ENCODING,
    )


def per_input_times_ms(runner: OnnxRunner, x: F32) -> tuple[F32, F32, Timings]:
    """Per-input (edge = encoder + head, hub) times in ms for TIMED_INPUTS inputs, cycled
    over all of `x`, with the medians."""
    rows = x[:TIMED_INPUTS]
    clock = time.perf_counter_ns
    enc, head, hub = (np.empty(len(rows)) for _ in range(3))
    for _ in range(2):  # the first pass warms caches and the allocator
        for i in range(len(rows)):
            t0 = clock()
            e = runner.embed(rows[i : i + 1])
            t1 = clock()
            runner.edge_probabilities(e)
            t2 = clock()
            runner.hub_probabilities(e)
            t3 = clock()
            enc[i], head[i], hub[i] = t1 - t0, t2 - t1, t3 - t2
    timings = Timings(
        encoder_us=float(np.median(enc)) / 1e3,
        head_us=float(np.median(head)) / 1e3,
        hub_us=float(np.median(hub)) / 1e3,
    )
    reps = -(-len(x) // len(rows))
    edge_ms = np.tile((enc + head) / 1e6, reps)[: len(x)].astype(np.float32)
    hub_ms = np.tile(hub / 1e6, reps)[: len(x)].astype(np.float32)
    return edge_ms, hub_ms, timings
