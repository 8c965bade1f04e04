"""The closed loop's trainer and stager: a new edge head from the hub's answers, as a bundle.

`train_head` fits a student on the original training split plus the distillation set (hub
labels on inputs the fleet escalated: exactly the inputs the old head was unsure of), a small
MLP where the build's head is logistic, then temperature-scales it and sets the router's
threshold on the calibration split as the builder does. `stage_bundle` writes it as a new
bundle (same encoder, same model version: the hub's space is unchanged) and signs it, for the
rollouts (cloud_hub/rollouts/) to deliver.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from escalade.modelbuild.evaluate import OnnxRunner, measure
from escalade.modelbuild.files import write_atomic
from escalade.modelbuild.layers import Classifier
from escalade.modelbuild.mlp import TrainConfig, fit_mlp_classifier
from escalade.modelbuild.onnx_export import classifier_model, serialize
from escalade.modelbuild.router import calibrate_router
from escalade.modelbuild.train import F32, I64, fit_temperature
from escalade_protocol.artifacts import (
    MANIFEST_NAME,
    ArtifactFile,
    ModelManifest,
    RouterCalibration,
    load_manifest,
    sha256_file,
    verified_path,
    write_manifest,
)
from escalade_protocol.bundles import artifacts, sign_bundle
from escalade_protocol.keys import Ed25519PrivateKey

# The student: one hidden layer, small enough for the edge (32 x 64 + 64 x 10 weights).
STUDENT_HIDDEN = (64,)
STUDENT_TRAINING = TrainConfig(epochs=40, batch_size=64, decay_every=15)


def train_head(
    base: tuple[F32, I64],
    distilled: tuple[F32, I64],
    calibration: tuple[F32, I64, F32],
    *,
    num_classes: int,
    seed: int = 0,
    config: TrainConfig = STUDENT_TRAINING,
) -> tuple[Classifier, RouterCalibration]:
    """(head, router) from the training split `base` (embeddings, labels), the distillation
    set (embeddings, hub labels) and the calibration split (embeddings, labels, hub
    probabilities)."""
    x = np.concatenate([base[0], distilled[0]]) if len(distilled[0]) else base[0]
    y = np.concatenate([base[1], distilled[1]]) if len(distilled[0]) else base[1]
    head = fit_mlp_classifier(
        np.ascontiguousarray(x, np.float32),
        y.astype(np.int64),
        num_classes=num_classes,
        hidden=STUDENT_HIDDEN,
        config=config,
        seed=seed,
    )
    cal_x, cal_y, cal_hub = calibration
    head = head.with_temperature(fit_temperature(head, cal_x, cal_y))
    edge = head.probabilities(cal_x).astype(np.float32)
    return head, calibrate_router(edge, cal_hub, cal_y)


def stage_bundle(
    base_dir: Path,
    head: Classifier,
    router: RouterCalibration,
    out_dir: Path,
    key: Ed25519PrivateKey,
) -> ModelManifest:
    """`base_dir`'s bundle with `head` and `router`, measured on its test split and signed."""
    manifest = load_manifest(base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for artifact in artifacts(manifest):
        if artifact.path != manifest.head.path:
            shutil.copyfile(verified_path(base_dir, artifact), out_dir / artifact.path)
    head_bytes = serialize(
        classifier_model(head, f"{manifest.model_id}-head", "edge head distilled from the hub")
    )
    write_atomic(out_dir / manifest.head.path, head_bytes)
    runner = OnnxRunner(
        (out_dir / manifest.encoder.path).read_bytes(),
        head_bytes,
        (out_dir / manifest.hub.path).read_bytes(),
    )
    with np.load(out_dir / manifest.test_split.path) as data:
        x_test, y_test = data["X"].astype(np.float32), data["y"].astype(np.int64)
    staged = manifest.model_copy(
        update={
            "head": ArtifactFile(
                path=manifest.head.path, sha256=sha256_file(out_dir / manifest.head.path)
            ),
            "router": router,
            # A learned router was fitted to the old head's mistakes: it does not carry over.
            "router_model": None,
            "metrics": measure(runner, x_test, y_test, router),
        }
    )
    write_manifest(out_dir, staged)
    sign_bundle(out_dir, key)
    return staged
