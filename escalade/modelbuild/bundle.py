"""`build_bundle`: dataset in, verified model bundle directory out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from escalade.modelbuild.datasets import load_dataset
from escalade.modelbuild.evaluate import OnnxRunner, measure
from escalade.modelbuild.files import npz_bytes, write_atomic
from escalade.modelbuild.network import fit_network
from escalade.modelbuild.onnx_export import classifier_model, encoder_model, serialize
from escalade.modelbuild.router import calibrate_router
from escalade.modelbuild.stats import embedding_statistics
from escalade.modelbuild.train import (
    F32,
    BuildError,
    Classifier,
    Encoder,
    EncoderKind,
    Recipe,
    Split,
    fit_encoder,
    fit_head,
    fit_hub,
    fit_private_encoder,
    fit_temperature,
    recipe_for,
    split_dataset,
    wire_round,
    with_encoder,
)
from escalade_protocol.artifacts import (
    MANIFEST_NAME,
    ArtifactFile,
    ModelManifest,
    sha256_file,
    write_manifest,
)

StepCallback = Callable[[str, int, int], None]
"""(step description, done, total): called as each stage starts and ends, hub training per epoch."""

MODEL_VERSION = 1
WIRE_DTYPE: Literal["float16"] = "float16"
# Exported graphs must reproduce the float64 reference within this (float32 rounding only).
EXPORT_TOLERANCE = 1e-4

ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
HUB_FILE = "hub.onnx"
CALIBRATION_FILE = "calibration.npz"
TEST_FILE = "test.npz"
CALIBRATION_SPLIT_FILE = "calibration_split.npz"


def _no_progress(description: str, done: int, total: int) -> None:
    pass


def _check_exports(
    runner: OnnxRunner,
    models: dict[str, bytes],
    *,
    encoder: Encoder,
    head: Classifier,
    hub: Classifier,
    x: F32,
) -> None:
    """Full ONNX checks, then onnxruntime against a float64 forward pass of the weights."""
    for model in models.values():
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    embedding = runner.embed(x)
    reference = encoder.reference(x)
    errors = {
        ENCODER_FILE: float(np.abs(embedding - reference).max()),
        HEAD_FILE: float(
            np.abs(runner.edge_probabilities(embedding) - head.probabilities(embedding)).max()
        ),
        HUB_FILE: float(
            np.abs(
                runner.hub_probabilities(embedding) - hub.probabilities(wire_round(embedding))
            ).max()
        ),
    }
    for name, error in errors.items():
        if not error <= EXPORT_TOLERANCE:
            raise BuildError(f"{name}: onnxruntime output differs from the weights by {error:.2e}")


def _fit_models(
    split: Split, recipe: Recipe, num_classes: int, seed: int, step: StepCallback
) -> tuple[Encoder, Classifier, Classifier]:
    """Encoder (PCA or the private MLP), temperature-scaled edge head, and hub on
    float16-rounded embeddings."""
    label = f"fitting encoder ({recipe.encoder.upper()})"
    step(label, 0, 1)
    if recipe.encoder == "mlp":
        encoder = fit_private_encoder(
            split.X_train,
            split.y_train,
            recipe.embedding_dim,
            num_classes,
            seed,
            large=recipe.large,
        )
    else:
        encoder = fit_encoder(split.X_train, recipe.embedding_dim, seed)
    train_embedding = encoder.embed(split.X_train)
    step(label, 1, 1)

    step("fitting edge head", 0, 1)
    head = fit_head(
        train_embedding, split.y_train, recipe=recipe, num_classes=num_classes, seed=seed
    )
    # Temperature scaling on the calibration split: about the same ranking, but probabilities
    # that mean what they say, for thresholds and for routers fitted on them later.
    head = head.with_temperature(fit_temperature(head, encoder.embed(split.X_cal), split.y_cal))
    step("fitting edge head", 1, 1)

    step("training hub model", 0, 1)
    hub = fit_hub(
        wire_round(train_embedding),
        split.y_train,
        num_classes,
        seed=seed,
        on_epoch=lambda epoch, total: step("training hub model", epoch, total),
        recipe=recipe,
    )
    return encoder, head, hub


def build_bundle(
    dataset: str,
    out_dir: Path,
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    max_train: int | None = None,
    hub_hidden: tuple[int, ...] | None = None,
    hub_epochs: int | None = None,
    encoder_kind: EncoderKind = "pca",
    model_version: int = MODEL_VERSION,
    network: bool = False,
    network_base_price: float = 1.0,
) -> ModelManifest:
    """Train encoder, edge head and hub on `dataset`, export them to ONNX and write a bundle.

    `dataset` is any name `load_dataset` accepts. `max_train` caps the training split (a
    stratified subset; for quick builds in tests). `hub_hidden` (and `hub_epochs`) replace the
    recipe's hub layers: a wider hub costs more per input, which is where the hub's dynamic
    batching pays (bench/escalation.py --batching). `encoder_kind`: "pca" (the default, linear) or
    "mlp" (the private recipe, docs/privacy.md). `model_version`: a new encoder of the same
    model is a new version (an adapter maps it to the old one, escalade/modelbuild/adapter.py).
    `network`: also the hub's model network (small, wide and specialist models, pooling
    weights, the meta-router's prior; docs/model-network.md), priced per 1000 inputs in
    proportion to multiply-adds, the generalist's at `network_base_price`. Deterministic for a
    given seed and machine: the same inputs give byte-identical files.
    """
    step = on_step or _no_progress

    def stage(description: str) -> Callable[[], None]:
        step(description, 0, 1)
        return lambda: step(description, 1, 1)

    done = stage("loading dataset")
    data = load_dataset(dataset)
    done()

    done = stage("splitting train / calibration / test")
    split = split_dataset(data, seed, max_train=max_train)
    recipe = with_encoder(recipe_for(data), encoder_kind, data.num_classes)
    if hub_hidden is not None:
        # The numpy trainer: scikit-learn's MLP in float64 is too slow for wide layers.
        recipe = replace(
            recipe, hub_hidden=hub_hidden, hub_epochs=hub_epochs or recipe.hub_epochs, large=True
        )
    done()

    encoder, head, hub = _fit_models(split, recipe, data.num_classes, seed, step)

    embedding_dim = recipe.embedding_dim
    model_id = f"{data.slug}-{recipe.encoder}{embedding_dim}"
    done = stage("exporting ONNX")
    encoder_bytes = serialize(encoder_model(encoder, f"{model_id}-encoder"))
    head_kind = f"MLP {head.hidden}" if head.hidden else "logistic regression"
    head_bytes = serialize(
        classifier_model(head, f"{model_id}-head", f"edge head: {head_kind}, temperature-scaled")
    )
    hub_bytes = serialize(
        classifier_model(hub, f"{model_id}-hub", "hub: MLP on float16-rounded embeddings")
    )
    done()

    done = stage("checking exported models")
    runner = OnnxRunner(encoder_bytes, head_bytes, hub_bytes)
    models = {ENCODER_FILE: encoder_bytes, HEAD_FILE: head_bytes, HUB_FILE: hub_bytes}
    _check_exports(runner, models, encoder=encoder, head=head, hub=hub, x=split.X_cal)
    done()

    done = stage("calibrating router")
    cal_embedding = runner.embed(split.X_cal)
    router = calibrate_router(
        runner.edge_probabilities(cal_embedding),
        runner.hub_probabilities(cal_embedding),
        split.y_cal,
    )
    # The hub checks what it receives, so describe embeddings as they arrive: float16-rounded.
    # Fit on the training split, set thresholds on the calibration split (held back from the
    # fit), with the classes the hub predicts there, as its class tier will see them.
    train_embedding = runner.embed(split.X_train)
    # What the hub sees: the inputs the router escalates, from both splits (~10% of each).
    hard = np.concatenate(
        [
            e[runner.edge_probabilities(e).max(axis=1) < router.threshold]
            for e in (train_embedding, cal_embedding)
        ]
    )
    statistics = embedding_statistics(
        wire_round(train_embedding),
        split.y_train,
        threshold_embedding=wire_round(cal_embedding),
        threshold_labels=runner.hub_probabilities(cal_embedding).argmax(axis=1).astype(np.int64),
        seed=seed,
        hard_embedding=wire_round(hard) if len(hard) else None,
    )
    done()

    built_network = None
    if network:
        built_network = fit_network(
            model_id=model_id,
            dataset_slug=data.slug,
            recipe=recipe,
            hub=hub,
            hub_file=HUB_FILE,
            train_embedding=train_embedding,
            y_train=split.y_train,
            cal_embedding=cal_embedding,
            cal_local=runner.edge_probabilities(cal_embedding),
            y_cal=split.y_cal,
            seed=seed,
            base_price=network_base_price,
            step=step,
        )

    done = stage("measuring on test split")
    metrics = measure(runner, split.X_test, split.y_test, router)
    done()

    done = stage("writing bundle")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A stale manifest would vouch for files about to be replaced: drop it first, write last.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    contents = {
        ENCODER_FILE: encoder_bytes,
        HEAD_FILE: head_bytes,
        HUB_FILE: hub_bytes,
        CALIBRATION_FILE: npz_bytes(dict(statistics)),
        # Raw inputs compress well (pixels are small integers); deflate stays deterministic.
        TEST_FILE: npz_bytes({"X": split.X_test, "y": split.y_test}, compress=True),
        CALIBRATION_SPLIT_FILE: npz_bytes({"X": split.X_cal, "y": split.y_cal}, compress=True),
        **(built_network.files if built_network is not None else {}),
    }
    artifacts: dict[str, ArtifactFile] = {}
    for name, content in contents.items():
        write_atomic(out_dir / name, content)
        artifacts[name] = ArtifactFile(path=name, sha256=sha256_file(out_dir / name))
    manifest = ModelManifest(
        model_id=model_id,
        model_version=model_version,
        dataset=data.name,
        seed=seed,
        input_dim=data.input_dim,
        embedding_dim=embedding_dim,
        num_classes=data.num_classes,
        wire_dtype=WIRE_DTYPE,
        encoder=artifacts[ENCODER_FILE],
        head=artifacts[HEAD_FILE],
        hub=artifacts[HUB_FILE],
        calibration=artifacts[CALIBRATION_FILE],
        test_split=artifacts[TEST_FILE],
        calibration_split=artifacts[CALIBRATION_SPLIT_FILE],
        router=router,
        network=built_network.spec(artifacts) if built_network is not None else None,
        metrics=metrics,
    )
    write_manifest(out_dir, manifest)
    done()
    return manifest
