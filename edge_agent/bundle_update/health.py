"""Health checks of a bundle's answers, and loading a new bundle in a worker thread.

`check_results` is pure: every answer must have the manifest's shapes, finite values and
probabilities that sum to one (within 1e-3). `load_checked` builds the new `EdgeRuntime` and
warms it up on zeros and the bundle's own calibration inputs, in the worker thread that calls
it; the loop only ever sees the finished, checked object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_agent.profile import FirmwareProfile
from edge_agent.runtime import F32, EdgeRuntime, LocalResult
from escalade_protocol.artifacts import BundleError, ModelManifest, verified_path
from escalade_protocol.bundles import BundleRefused
from escalade_protocol.errors import ErrorCode

# Warm-up inputs: zeros plus this many rows of the bundle's calibration split.
WARMUP_ROWS = 16
_SUM_TOLERANCE = 1e-3


def check_results(results: Sequence[LocalResult], manifest: ModelManifest) -> str | None:
    """None when every answer is sound; otherwise what is wrong with the first bad one."""
    for r in results:
        if r.embedding.shape != (manifest.embedding_dim,):
            return f"embedding shape {r.embedding.shape}, manifest {manifest.embedding_dim}"
        if r.probabilities.shape != (manifest.num_classes,):
            return f"head output shape {r.probabilities.shape}, manifest {manifest.num_classes}"
        if not (np.isfinite(r.embedding).all() and np.isfinite(r.probabilities).all()):
            return "non-finite embedding or probabilities"
        if abs(float(r.probabilities.sum()) - 1.0) > _SUM_TOLERANCE or r.probabilities.min() < 0:
            return "head output is not a probability distribution"
    return None


def compatible(new: ModelManifest, running: ModelManifest) -> str | None:
    """Why `new` cannot replace `running` between requests (the API's shapes), or None."""
    for name in ("model_id", "input_dim", "embedding_dim", "num_classes", "wire_dtype"):
        if getattr(new, name) != getattr(running, name):
            return f"{name} {getattr(new, name)} differs from the running {getattr(running, name)}"
    return None


def _warmup_inputs(bundle_dir: Path, manifest: ModelManifest) -> F32:
    rows = [np.zeros((1, manifest.input_dim), dtype=np.float32)]
    split = manifest.calibration_split
    if split is not None:
        with np.load(verified_path(bundle_dir, split), allow_pickle=False) as data:
            rows.append(np.asarray(data["X"][:WARMUP_ROWS], dtype=np.float32))
    return np.concatenate(rows)


def load_checked(
    bundle_dir: Path, profile: FirmwareProfile, *, data_dir: Path, running: ModelManifest
) -> EdgeRuntime:
    """The bundle loaded and warmed up (blocking; run in a worker thread).

    Raises BundleRefused: `bundle_incompatible` before loading, `bundle_warmup_failed` when
    the sessions cannot be built or the warm-up answers fail `check_results`.
    """
    try:
        runtime = EdgeRuntime(bundle_dir, profile, data_dir=data_dir)
    except (BundleError, OSError, RuntimeError, ValueError) as exc:
        raise BundleRefused(ErrorCode.BUNDLE_WARMUP_FAILED, f"cannot load: {exc}") from None
    reason = compatible(runtime.manifest, running)
    if reason is not None:
        raise BundleRefused(ErrorCode.BUNDLE_INCOMPATIBLE, reason)
    try:
        inputs = _warmup_inputs(bundle_dir, runtime.manifest)
        results = runtime.infer_batch(inputs)
    except Exception as exc:  # ONNX Runtime raises its own types (InvalidArgument, Fail...)
        raise BundleRefused(ErrorCode.BUNDLE_WARMUP_FAILED, f"warm-up failed: {exc}") from None
    problem = check_results(results, runtime.manifest)
    if problem is not None:
        raise BundleRefused(ErrorCode.BUNDLE_WARMUP_FAILED, f"warm-up: {problem}")
    runtime.batches = 0
    return runtime
