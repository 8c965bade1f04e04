"""Routes by model version: the native model, or an adapter into its space, with its checker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cloud_hub.poisoning import EmbeddingChecker, ReferenceStats
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    AdapterEntry,
    ModelManifest,
    verified_path,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import AdaptedModelInfo

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """What an envelope of one model version needs: its wire shape, the map into the hub
    model's space (None: already there) and the checks for the mapped embedding."""

    model_id: str
    model_version: int
    embedding_dim: int
    wire_dtype: Literal["float32", "float16"]
    checker: EmbeddingChecker
    session: ort.InferenceSession | None = None
    kind: Literal["linear", "mlp"] | None = None  # None: the hub model's own version

    def adapt(self, embedding: F32) -> F32:
        """The embedding in the hub model's space (one row through the adapter, ~20 us)."""
        if self.session is None:
            return embedding
        (out,) = self.session.run([EMBEDDING], {ENCODER_INPUT: embedding.reshape(1, -1)})
        row: F32 = np.asarray(out, np.float32)[0]
        return row


def _adapter_route(bundle_dir: Path, entry: AdapterEntry, width: int) -> ModelRoute:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(verified_path(bundle_dir, entry.model)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    # The adapter's own statistics: bands set on adapted clean embeddings, so a 1% false
    # positive rate holds for adapted traffic too (v1's bands would be off by the fit error).
    stats = ReferenceStats.load(verified_path(bundle_dir, entry.calibration))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if (
        inputs.get(ENCODER_INPUT, [None, None])[-1] != entry.input_dim
        or outputs.get(EMBEDDING, [None, None])[-1] != width
        or stats.dim != width
    ):
        raise ValueError(
            f"adapter {entry.model.path} does not map {entry.input_dim} -> {width} dimensions"
        )
    return ModelRoute(
        model_id=entry.source_model_id,
        model_version=entry.source_model_version,
        embedding_dim=entry.input_dim,
        wire_dtype=entry.wire_dtype,
        checker=EmbeddingChecker(stats),
        session=session,
        kind=entry.kind,
    )


class ModelRoutes:
    """The hub model's own version and every adapted one, by (model_id, model_version)."""

    def __init__(self, bundle_dir: Path, manifest: ModelManifest, checker: EmbeddingChecker):
        self.manifest = manifest
        native = ModelRoute(
            manifest.model_id,
            manifest.model_version,
            manifest.embedding_dim,
            manifest.wire_dtype,
            checker,
        )
        self._routes = {(native.model_id, native.model_version): native}
        for entry in manifest.adapters:
            route = _adapter_route(bundle_dir, entry, manifest.embedding_dim)
            self._routes[(route.model_id, route.model_version)] = route

    def select(self, model_id: str, model_version: int) -> ModelRoute:
        route = self._routes.get((model_id, model_version))
        if route is None:
            m = self.manifest
            adapted = "".join(
                f", {a.source_model_id} v{a.source_model_version}" for a in m.adapters
            )
            raise ProtocolError(
                ErrorCode.UNKNOWN_MODEL,
                f"hub serves {m.model_id} v{m.model_version}{adapted}, "
                f"not {model_id!r} v{model_version}",
            )
        return route

    def adapted(self) -> tuple[AdaptedModelInfo, ...]:
        return tuple(
            AdaptedModelInfo(
                model_id=r.model_id,
                model_version=r.model_version,
                embedding_dim=r.embedding_dim,
                wire_dtype=r.wire_dtype,
                kind=r.kind,
            )
            for r in self._routes.values()
            if r.kind is not None
        )
