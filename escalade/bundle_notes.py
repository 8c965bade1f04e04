"""What the demo and the model builder tell a user about a bundle: which one is used, whether it
is intact, why its escalations are as large as they are, and when its hub model is worse than
its edge model. Pure functions over a manifest (and its files, for the digest check)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cloud_hub.store.catalog import bundle_artifacts
from escalade_protocol.artifacts import (
    MANIFEST_NAME,
    BundleMetrics,
    ModelManifest,
    load_manifest,
    verified_path,
)


def check_bundle(bundle_dir: Path) -> ModelManifest:
    """The bundle's manifest once every file it names matches its digest (raises BundleError)."""
    manifest = load_manifest(bundle_dir)
    for artifact in bundle_artifacts(manifest):
        verified_path(bundle_dir, artifact)
    return manifest


def describe(bundle_dir: Path, manifest: ModelManifest) -> str:
    built = datetime.fromtimestamp((bundle_dir / MANIFEST_NAME).stat().st_mtime, UTC)
    return (
        f"using the model bundle in {bundle_dir}: {manifest.model_id} v{manifest.model_version} "
        f"(dataset {manifest.dataset}, seed {manifest.seed}), built {built:%Y-%m-%d %H:%M} UTC"
    )


def bytes_note(manifest: ModelManifest) -> str:
    """Why an escalation is the size it is next to uploading the raw input."""
    itemsize = np.dtype(manifest.wire_dtype).itemsize
    embedding = manifest.embedding_dim * itemsize
    raw = manifest.input_dim  # one byte per input value (the datasets' pixels)
    what = (
        f"the embedding ({manifest.embedding_dim} {manifest.wire_dtype} values, {embedding} B) "
        f"against the raw input ({manifest.input_dim} one-byte values, {raw} B)"
    )
    if embedding == raw:
        return (
            f"same size: {what}, in the same envelope. This dataset's inputs are too small "
            "to save bytes; the embedding still keeps the raw input on the device"
        )
    if embedding < raw:
        return f"{raw / embedding:.1f}x smaller: {what}"
    return f"larger: {what}; the embedding keeps the raw input on the device"


def hub_accuracy_warning(metrics: BundleMetrics) -> str | None:
    """A warning when escalating makes answers worse: the hub model is below the edge's."""
    if metrics.hub_accuracy >= metrics.edge_accuracy:
        return None
    return (
        f"the hub model ({metrics.hub_accuracy:.2%}) is LESS accurate than the edge model "
        f"({metrics.edge_accuracy:.2%}) on the test split: escalating makes answers worse. "
        "Give it more data, or a larger hub (--hub-hidden, --hub-epochs)"
    )
