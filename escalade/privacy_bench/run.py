"""`run_privacy_bench`: build (or take) one bundle per encoder recipe, attack its wire embeddings.

Victims are the bundle's test inputs; attackers learn from the training split (public data from
the same distribution, as a real attacker would have) and know the encoder. Every embedding
goes through the float16 wire round trip first, as on the wire.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from escalade.modelbuild.train import ENCODER_KINDS, EncoderKind
from escalade.poisoning_bench.models import BundleModels, wire
from escalade.privacy_bench.attackers import (
    Decoder,
    attribute_probe,
    fit_decoders,
    pseudo_inverse,
    reidentified,
    relative_l2,
)
from escalade.privacy_bench.report import (
    AttackerResult,
    DatasetResult,
    NoiseResult,
    PrivacyReport,
    RawResult,
    RecipeResult,
)
from escalade.privacy_bench.ssim import ssim

StepCallback = Callable[[str, int, int], None]
F32 = NDArray[np.float32]
Bundles = Mapping[tuple[str, EncoderKind], Path]

DEFAULT_RECIPE: EncoderKind = "pca"
PRIVATE_RECIPE: EncoderKind = "mlp"
# Noise on the default recipe's embedding, in units of its per-coordinate spread.
NOISE_LEVELS = (0.1, 0.25, 0.5)
TARGET_ERROR_RATIO = 3.0
TARGET_COST_PP = 0.5


def _noop(description: str, done: int, total: int) -> None:
    pass


class _Victims:
    """The inputs to protect and the public data attackers learn from."""

    def __init__(self, models: BundleModels) -> None:
        from escalade.modelbuild.datasets import load_dataset
        from escalade.modelbuild.train import split_dataset

        m = models.manifest
        self.x: F32 = models.x_test
        self.y = models.y_test
        self.public: F32 = split_dataset(load_dataset(m.dataset), m.seed).X_train
        self.side = round(float(np.sqrt(self.x.shape[1])))
        self.data_range = float(self.public.max())

    def similarity(self, rebuilt: NDArray[np.floating]) -> float:
        if self.side * self.side != self.x.shape[1]:
            return float("nan")  # not square images: SSIM does not apply
        return float(ssim(rebuilt, self.x, self.side, self.data_range).mean())


def run_privacy_bench(
    datasets: Sequence[str] = ("digits",),
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    bundles: Bundles | None = None,
    quick: bool = False,
    noise_levels: Sequence[float] = NOISE_LEVELS,
) -> PrivacyReport:
    """One row per recipe and attacker; `bundles` maps (dataset, recipe) to a bundle already
    built (the rest are built here, in a temporary directory)."""
    started = time.perf_counter()
    step = on_step or _noop
    given = dict(bundles or {})
    results = []
    with tempfile.TemporaryDirectory(prefix="escalade-privacy-") as tmp:
        for dataset in datasets:
            paths = {
                recipe: given.get((dataset, recipe))
                or _build(dataset, recipe, seed, Path(tmp), step)
                for recipe in ENCODER_KINDS
            }
            results.append(
                _dataset(
                    dataset,
                    paths=paths,
                    seed=seed,
                    quick=quick,
                    noise_levels=noise_levels,
                    step=step,
                )
            )
    return PrivacyReport(
        seed=seed, quick=quick, datasets=results, seconds=round(time.perf_counter() - started, 1)
    )


def _build(dataset: str, recipe: EncoderKind, seed: int, tmp: Path, step: StepCallback) -> Path:
    from escalade.modelbuild import build_bundle

    out = tmp / f"{dataset}-{recipe}"
    step(f"building {dataset} ({recipe})", 0, 1)
    build_bundle(dataset, out, seed=seed, encoder_kind=recipe)
    step(f"building {dataset} ({recipe})", 1, 1)
    return out


def _dataset(
    dataset: str,
    *,
    paths: Mapping[EncoderKind, Path],
    seed: int,
    quick: bool,
    noise_levels: Sequence[float],
    step: StepCallback,
) -> DatasetResult:
    recipes: dict[EncoderKind, RecipeResult] = {}
    victims: _Victims | None = None
    for recipe, path in paths.items():
        step(f"attacking {dataset} ({recipe})", 0, 1)
        models = BundleModels(path)
        victims = victims or _Victims(models)
        levels = noise_levels if recipe == DEFAULT_RECIPE else ()
        recipes[recipe] = _recipe(
            recipe, models=models, v=victims, seed=seed, quick=quick, noise_levels=levels
        )
        step(f"attacking {dataset} ({recipe})", 1, 1)
    assert victims is not None
    default, private = recipes[DEFAULT_RECIPE], recipes[PRIVATE_RECIPE]
    ratio = private.best_relative_l2 / max(default.best_relative_l2, 1e-12)
    cost = 100 * (default.cascade_accuracy - private.cascade_accuracy)
    raw = RawResult(
        wire_bytes=4 * int(victims.x.shape[1]),
        relative_l2=0.0,
        ssim=1.0,
        attribute_probe_accuracy=round(
            attribute_probe(victims.public, victims.public, victims.x, victims.x), 4
        ),
    )
    return DatasetResult(
        dataset=dataset,
        victims=len(victims.x),
        public=len(victims.public),
        raw=raw,
        recipes=list(recipes.values()),
        private_recipe=PRIVATE_RECIPE,
        error_ratio=round(ratio, 3),
        accuracy_cost_pp=round(cost, 3),
        target_met=ratio >= TARGET_ERROR_RATIO and cost <= TARGET_COST_PP,
    )


def _attack(attackers: Mapping[str, Decoder], embedding: F32, v: _Victims) -> list[AttackerResult]:
    rows = []
    for name, decode in attackers.items():
        rebuilt = decode(embedding)
        rows.append(
            AttackerResult(
                attacker=name,
                relative_l2=round(relative_l2(rebuilt, v.x), 4),
                ssim=round(v.similarity(rebuilt), 4),
                reidentified=round(reidentified(rebuilt, v.x), 4),
            )
        )
    return rows


def _attackers(
    models: BundleModels, public: F32, v: _Victims, seed: int, quick: bool
) -> dict[str, Decoder]:
    attackers: dict[str, Decoder] = {}
    inverse = pseudo_inverse(models.encoder_path)
    if inverse is not None:
        attackers["pseudo_inverse"] = inverse
    attackers.update(fit_decoders(public, v.public, seed, quick=quick))
    return attackers


def _cascade(
    models: BundleModels, clean: F32, sent: F32, y: NDArray[np.int64]
) -> tuple[float, float]:
    """(hub accuracy, cascade accuracy): the head answers from the clean embedding when it is
    confident, the hub from what was sent otherwise."""
    hub = models.predict(sent)
    edge = models.edge_probabilities(clean)
    escalated = edge.max(axis=1) < models.manifest.router.threshold
    answer = np.where(escalated, hub, edge.argmax(axis=1))
    return float((hub == y).mean()), float((answer == y).mean())


def _recipe(
    recipe: EncoderKind,
    *,
    models: BundleModels,
    v: _Victims,
    seed: int,
    quick: bool,
    noise_levels: Sequence[float],
) -> RecipeResult:
    public, embedding = models.embed(v.public), models.embed(v.x)
    rows = _attack(_attackers(models, public, v, seed, quick), embedding, v)
    best = min(rows, key=lambda r: r.relative_l2)
    hub_accuracy, cascade_accuracy = _cascade(models, embedding, embedding, v.y)
    rng = np.random.default_rng(seed)
    spread = public.std(axis=0)
    noise = []
    for sigma in noise_levels:
        noisy_public = wire(public + sigma * spread * rng.standard_normal(public.shape))
        sent = wire(embedding + sigma * spread * rng.standard_normal(embedding.shape))
        noisy_rows = _attack(_attackers(models, noisy_public, v, seed, quick), sent, v)
        noisy_best = min(noisy_rows, key=lambda r: r.relative_l2)
        hub_noisy, cascade_noisy = _cascade(models, embedding, sent, v.y)
        noise.append(
            NoiseResult(
                sigma=sigma,
                hub_accuracy=round(hub_noisy, 4),
                cascade_accuracy=round(cascade_noisy, 4),
                accuracy_cost_pp=round(100 * (cascade_accuracy - cascade_noisy), 3),
                best_relative_l2=noisy_best.relative_l2,
                best_ssim=noisy_best.ssim,
                attribute_probe_accuracy=round(
                    attribute_probe(noisy_public, v.public, sent, v.x), 4
                ),
            )
        )
    m = models.manifest
    return RecipeResult(
        recipe=recipe,
        model_id=m.model_id,
        embedding_dim=m.embedding_dim,
        wire_bytes=2 * m.embedding_dim,
        edge_accuracy=round(m.metrics.edge_accuracy, 4),
        hub_accuracy=round(hub_accuracy, 4),
        cascade_accuracy=round(cascade_accuracy, 4),
        escalation_rate=round(m.metrics.escalation_rate, 4),
        attackers=rows,
        best_attacker=best.attacker,
        best_relative_l2=best.relative_l2,
        best_ssim=best.ssim,
        attribute_probe_accuracy=round(attribute_probe(public, v.public, embedding, v.x), 4),
        noise=noise,
    )
