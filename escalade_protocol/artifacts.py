"""The model bundle: what `escalade models build` writes and what agents and hubs load.

A bundle is a directory holding ONNX files, calibration statistics and ``manifest.json``.
The manifest names every file with its SHA-256 digest; loaders verify each digest before use,
so a bundle copied to a device either loads exactly as built or not at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"

# Tensor names shared by the builder and the runtimes.
ENCODER_INPUT = "input"
EMBEDDING = "embedding"
PROBABILITIES = "probabilities"


class BundleError(Exception):
    """A model bundle is missing, malformed or does not match its manifest."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ArtifactFile(_Frozen):
    path: str = Field(description="relative to the bundle directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RouterCalibration(_Frozen):
    """The threshold the edge router starts from, chosen on the calibration split.

    The router escalates when the signal is below the threshold. Signals are oriented so that
    higher means "more confident": max_probability, margin (top-1 minus top-2), neg_entropy
    (minus the entropy, in nats), learned (the router model's probability that the local
    answer is right).
    """

    signal: Literal["max_probability", "margin", "neg_entropy", "learned"] = "max_probability"
    threshold: float
    expected_accuracy: float
    expected_escalation_rate: float
    # Share of inputs answered locally whose hub answer would differ, at this threshold: the
    # online router steers toward it from the hub's answers to explored inputs.
    expected_miss_rate: float | None = None
    # What the threshold was chosen for: match the hub's accuracy (within a tolerance), reach a
    # target accuracy, or spend at most an escalation budget (fraction of inputs).
    target: Literal["match_hub", "accuracy", "escalation_budget"] = "match_hub"
    target_value: float | None = None


class BundleMetrics(_Frozen):
    """Accuracies on the held-out test split, measured by the builder."""

    edge_accuracy: float
    hub_accuracy: float
    cascade_accuracy: float
    escalation_rate: float


class AdapterMetrics(_Frozen):
    """Measured by `escalade models adapt` on the source bundle's test split."""

    # hub(adapter(source embedding)) against the labels.
    adapted_hub_accuracy: float
    # The source bundle's own hub, trained on the source encoder's embeddings.
    retrained_hub_accuracy: float


class AdapterEntry(_Frozen):
    """An adapter from another encoder's embedding space into this bundle's (v2 -> v1).

    The hub serves envelopes of (source_model_id, source_model_version) by mapping their
    embeddings through `model` (ONNX: ``input`` of width `input_dim` -> ``embedding`` of this
    bundle's width) before its checks and its model; `calibration` holds the reference
    statistics of adapted clean embeddings, so the poisoning checks keep their 1% bands.
    """

    source_model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    source_model_version: int = Field(ge=1, lt=2**32)
    input_dim: int = Field(ge=1)
    wire_dtype: Literal["float32", "float16"]
    kind: Literal["linear", "mlp"]
    model: ArtifactFile
    calibration: ArtifactFile
    metrics: AdapterMetrics | None = None


HubModelKind = Literal["generalist", "small", "wide", "specialist"]


class HubModelEntry(_Frozen):
    """One model of the hub's network (docs/model-network.md). Its probabilities are over
    `classes` (all of them unless a specialist's group), in that order."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    kind: HubModelKind
    file: ArtifactFile
    classes: tuple[int, ...]
    # What the group is called (specialists: "tops", "footwear"; others: "all").
    group: str = "all"
    hidden: tuple[int, ...] = ()
    # Multiply-adds per input: what the declared price is proportional to.
    macs: int = Field(ge=0)
    # Declared price per 1000 inputs, in the operator's currency unit.
    price_per_1k: float = Field(ge=0)
    # Accuracy on the calibration split (a specialist's: within its group).
    calibration_accuracy: float


class NetworkArm(_Frozen):
    """A choice of the meta-router: models run together, pooled with the local probabilities.

    `models` names entries; "specialist" stands for the specialist of the group the local
    probabilities put most mass on. `weights` are the log-linear pooling weights, local first,
    fitted on the calibration split."""

    name: str
    models: tuple[str, ...]
    weights: tuple[float, ...]


class NetworkSpec(_Frozen):
    models: tuple[HubModelEntry, ...]
    arms: tuple[NetworkArm, ...]
    # The meta-router's warm start (ridge statistics per arm, from the calibration split).
    router: ArtifactFile
    # The share of requests the router explores (runs every model, learns from the consensus).
    exploration_rate: float = Field(ge=0, le=1)


class ModelManifest(_Frozen):
    format_version: Literal[1] = 1
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    model_version: int = Field(ge=1, lt=2**32)
    dataset: str
    seed: int
    input_dim: int = Field(ge=1)
    embedding_dim: int = Field(ge=1)
    num_classes: int = Field(ge=2, lt=2**16)
    # dtype of the embedding as it travels to the hub
    wire_dtype: Literal["float32", "float16"]
    encoder: ArtifactFile
    head: ArtifactFile
    hub: ArtifactFile
    calibration: ArtifactFile
    test_split: ArtifactFile
    router: RouterCalibration
    # The calibration split's raw inputs and labels (X, y), for routers fitted after the build.
    calibration_split: ArtifactFile | None = None
    # Input -> probability that the local answer is right (signal "learned"); optional.
    router_model: ArtifactFile | None = None
    # The hub's model network (several models, arms, router prior); None: the hub model only.
    network: NetworkSpec | None = None
    metrics: BundleMetrics
    # Adapters from other encoders' spaces into this one (hub side; the agent ignores them).
    adapters: tuple[AdapterEntry, ...] = ()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle_dir: Path) -> ModelManifest:
    path = bundle_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no model bundle at {bundle_dir} (missing {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    try:
        return ModelManifest.model_validate(raw, strict=False)
    except ValueError as exc:
        raise BundleError(f"invalid manifest {path}: {exc}") from exc


def verified_path(bundle_dir: Path, artifact: ArtifactFile) -> Path:
    """Return the artifact's path after checking that its digest matches the manifest."""
    path = (bundle_dir / artifact.path).resolve()
    if bundle_dir.resolve() not in path.parents:
        raise BundleError(f"artifact path escapes the bundle: {artifact.path}")
    if not path.is_file():
        raise BundleError(f"missing artifact {path}")
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise BundleError(f"digest mismatch for {path}: manifest {artifact.sha256}, file {actual}")
    return path


def write_manifest(bundle_dir: Path, manifest: ModelManifest) -> Path:
    path = bundle_dir / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path
