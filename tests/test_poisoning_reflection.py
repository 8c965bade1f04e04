"""The reflection tier on real embeddings: the session's digits bundle, its own encoder (ONNX
Runtime), its shipped reference statistics; sign flips x -> -x against clean traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_hub.poisoning import EmbeddingChecker, ReferenceStats
from cloud_hub.poisoning.checks import REFLECTION
from escalade.poisoning_bench.models import BundleModels, wire

REFLECTION_TIER = 3  # row of TierScores.ratios


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> tuple[BundleModels, EmbeddingChecker]:
    models = BundleModels(bundle_dir)
    return models, EmbeddingChecker(ReferenceStats.load(models.calibration))


def test_the_bundle_ships_the_reflection_tier(
    bundle: tuple[BundleModels, EmbeddingChecker],
) -> None:
    assert bundle[1].stats.reflection is not None


def test_sign_flipped_embeddings_are_refused_by_the_reflection_tier(
    bundle: tuple[BundleModels, EmbeddingChecker],
) -> None:
    """Tiers 1-3 are symmetric about the mean: the reflection tier is what catches -x."""
    models, checker = bundle
    flipped = wire(-models.embed(models.x_test))
    answer = models.predict(flipped)
    scores = checker.check_batch(flipped, answer)
    by_reflection = scores.ratios[REFLECTION_TIER] > 1
    assert by_reflection.mean() >= 0.99
    # The single-message path the hub runs refuses them too, naming the tier (an earlier one
    # for the few whose clean embedding was out of band already).
    results = [checker.check(flipped[i], int(answer[i])) for i in range(100)]
    assert sum(not r.passed for r in results) >= 99
    assert sum(r.reason == REFLECTION for r in results) >= 90


def test_clean_embeddings_pass_within_the_band(
    bundle: tuple[BundleModels, EmbeddingChecker],
) -> None:
    """Clean test embeddings (never seen at build time): the reflection tier alone refuses
    no more than the whole 1% budget, all tiers together within sampling noise of it
    (360 embeddings: 3x the target is > 4 standard deviations out)."""
    models, checker = bundle
    clean = models.embed(models.x_test)
    scores = checker.check_batch(clean, models.predict(clean))
    target = checker.stats.target_fpr
    assert (scores.ratios[REFLECTION_TIER] > 1).mean() <= target
    assert 1 - scores.passed.mean() <= 3 * target


def test_a_reflection_about_the_mean_is_no_escape(
    bundle: tuple[BundleModels, EmbeddingChecker],
) -> None:
    """Mirroring about the reference mean, 2 mu - x, also keeps tiers 1-3's distances; the
    digits encoder centres its output, so it is caught as well."""
    models, checker = bundle
    clean = models.embed(models.x_test).astype(np.float64)
    mirrored = wire(2 * checker.stats.mean - clean)
    scores = checker.check_batch(mirrored, models.predict(mirrored))
    assert (scores.ratios[REFLECTION_TIER] > 1).mean() >= 0.95
