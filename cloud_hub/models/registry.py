"""The bundle's hub models as ONNX Runtime sessions: any number, each with its declared price
and its latency measured here at load; all served behind the one attested hub identity."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cloud_hub.models.fusion import SPECIALIST_SLOT
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    HubModelEntry,
    ModelManifest,
    NetworkArm,
    verified_path,
)

F32 = npt.NDArray[np.float32]
# `--hub-models` names: a model's name or kind; "specialists" selects every specialist.
SPECIALISTS = "specialists"


class RegisteredModel:
    def __init__(self, bundle_dir: Path, entry: HubModelEntry, *, threads: int = 1) -> None:
        self.entry = entry
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(verified_path(bundle_dir, entry.file)),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_dim = int(self._session.get_inputs()[0].shape[1])
        self.latency_s = self.measure_latency()

    @property
    def name(self) -> str:
        return self.entry.name

    def predict_batch(self, embeddings: F32) -> F32:
        batch = embeddings.astype(np.float32, copy=False)
        (probabilities,) = self._session.run([PROBABILITIES], {EMBEDDING: batch})
        result: F32 = np.asarray(probabilities, dtype=np.float32)
        return result

    def measure_latency(self, runs: int = 30) -> float:
        """Median seconds per single-embedding prediction, measured on zeros."""
        probe = np.zeros((1, self.input_dim), dtype=np.float32)
        self.predict_batch(probe)
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            self.predict_batch(probe)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings))


def select_models(manifest: ModelManifest, wanted: Sequence[str]) -> list[HubModelEntry]:
    """The network's entries `wanted` names (by name or kind; "specialists": all of them).
    Raises ValueError for a name the bundle does not have, or a bundle without a network."""
    network = manifest.network
    if network is None:
        raise ValueError(f"bundle {manifest.model_id} has no hub model network (build with one)")
    chosen: dict[str, HubModelEntry] = {}
    for name in wanted:
        matches = [
            m
            for m in network.models
            if name in (m.name, m.kind) or (name == SPECIALISTS and m.kind == "specialist")
        ]
        if not matches:
            known = ", ".join([m.name for m in network.models] + [SPECIALISTS])
            raise ValueError(f"no hub model {name!r} in the bundle (it has {known})")
        chosen.update({m.name: m for m in matches})
    return [m for m in network.models if m.name in chosen]


class HubModels:
    """The selected models, by name, and the arms that only use them."""

    def __init__(
        self, bundle_dir: Path, manifest: ModelManifest, entries: Sequence[HubModelEntry]
    ) -> None:
        assert manifest.network is not None
        self.num_classes = manifest.num_classes
        self.models = {e.name: RegisteredModel(bundle_dir, e) for e in entries}
        self.specialists = [m for m in self.models.values() if m.entry.kind == "specialist"]
        self.arms: list[NetworkArm] = [
            arm for arm in manifest.network.arms if all(self._has(m) for m in arm.models)
        ]
        if not self.arms:
            raise ValueError("no arm of the bundle's network uses only the selected models")

    def _has(self, name: str) -> bool:
        return bool(self.specialists) if name == SPECIALIST_SLOT else name in self.models

    def specialist_for(self, local: npt.NDArray[np.floating]) -> RegisteredModel:
        """The specialist of the group the local probabilities put most mass on."""
        masses = [float(np.asarray(local)[list(m.entry.classes)].sum()) for m in self.specialists]
        return self.specialists[int(np.argmax(masses))]

    def resolve(self, arm: NetworkArm, local: npt.NDArray[np.floating]) -> tuple[str, ...]:
        """The concrete models an arm runs for these local probabilities."""
        return tuple(
            self.specialist_for(local).name if m == SPECIALIST_SLOT else m for m in arm.models
        )

    def price(self, names: Sequence[str]) -> float:
        """Declared price of one answer by these models (price_per_1k / 1000 each)."""
        return sum(self.models[n].entry.price_per_1k for n in names) / 1000.0

    def model_ms(self, names: Sequence[str]) -> float:
        return sum(self.models[n].latency_s for n in names) * 1000.0

    def arm_price(self, arm: NetworkArm) -> float:
        """An arm's price; a specialist slot costs the dearest specialist."""
        return sum(self._slot_costs(m)[0] for m in arm.models) / 1000.0

    def arm_model_ms(self, arm: NetworkArm) -> float:
        return sum(self._slot_costs(m)[1] for m in arm.models) * 1000.0

    def _slot_costs(self, name: str) -> tuple[float, float]:
        group = self.specialists if name == SPECIALIST_SLOT else [self.models[name]]
        return (
            max(m.entry.price_per_1k for m in group),
            max(m.latency_s for m in group),
        )
