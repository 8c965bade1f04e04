"""The model's own encoder, run by the hub on a revealed input (inside the enclave).

The hub holds the whole bundle, encoder included, and checks its digest like every artifact.
What it computes is the embedding an honest device would have sent for that input, before the
wire's float16 rounding; `verdict.judge_reveal` compares within a tolerance covering that
rounding and the spread between execution providers (docs/provenance.md has the figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from escalade_protocol.artifacts import EMBEDDING, ENCODER_INPUT, load_manifest, verified_path
from escalade_protocol.input_domain import load_input_domain
from escalade_protocol.tensor import Tensor

F32 = npt.NDArray[np.float32]


class Reencoder:
    def __init__(self, bundle_dir: Path) -> None:
        manifest = load_manifest(bundle_dir)
        self.input_dim = manifest.input_dim
        # An input outside the bundle's domain is no sensor reading of this model: a device
        # crafting an input to fit a forged embedding has to leave it to get far.
        self.domain = load_input_domain(bundle_dir, manifest)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(verified_path(bundle_dir, manifest.encoder)),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def embedding(self, revealed: Tensor) -> F32 | None:
        """The encoder's embedding of a revealed input; None when it is no input of this model
        (shape, dtype, non-finite values, outside the bundle's input domain)."""
        if revealed.dtype != "float32" or revealed.shape != (self.input_dim,):
            return None
        features = np.asarray(revealed.to_numpy(), dtype=np.float32)
        if not np.isfinite(features).all():
            return None
        if self.domain is not None and not self.domain.contains(features):
            return None
        (out,) = self._session.run([EMBEDDING], {ENCODER_INPUT: features.reshape(1, -1)})
        return np.asarray(out[0], dtype=np.float32)
