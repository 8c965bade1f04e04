"""The privacy bench on real digits bundles: the default PCA one (the session's) and a private
MLP one built here; attackers really rebuild inputs from float16 wire embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from escalade.modelbuild import build_bundle
from escalade.privacy_bench import PrivacyReport, run_privacy_bench
from escalade.privacy_bench.attackers import reidentified, relative_l2
from escalade.privacy_bench.ssim import ssim
from escalade.privacy_bench.table import markdown

# The module's fixture builds an MLP bundle and trains the attackers' decoders (~40 s alone);
# its time counts against whichever test asks first, and a loaded 2-core CI machine took 3x.
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def report(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PrivacyReport:
    private = tmp_path_factory.mktemp("private")
    build_bundle("digits", private, seed=0, max_train=500, encoder_kind="mlp")
    bundles = {("digits", "pca"): bundle_dir, ("digits", "mlp"): private}
    return run_privacy_bench(["digits"], bundles=bundles, quick=True, noise_levels=(0.5,))


def test_pseudo_inverse_rebuilds_pca_inputs_far_better_than_any_attack_on_the_mlp(
    report: PrivacyReport,
) -> None:
    (d,) = report.datasets
    pca, mlp = d.recipes
    assert (pca.recipe, mlp.recipe) == ("pca", "mlp")
    inverse = {a.attacker: a for a in pca.attackers}["pseudo_inverse"]
    assert 0.05 < inverse.relative_l2 < 0.2  # ~11% measured
    assert inverse.reidentified > 0.95
    assert "pseudo_inverse" not in {a.attacker for a in mlp.attackers}  # not linear
    assert inverse.relative_l2 * 2 < mlp.best_relative_l2
    assert mlp.best_ssim < pca.best_ssim
    assert d.error_ratio == pytest.approx(mlp.best_relative_l2 / pca.best_relative_l2, rel=1e-2)
    assert mlp.wire_bytes == 20
    assert pca.wire_bytes == 64


def test_noise_costs_accuracy_and_buys_reconstruction_error(report: PrivacyReport) -> None:
    pca = report.datasets[0].recipes[0]
    (noisy,) = pca.noise
    assert noisy.best_relative_l2 > pca.best_relative_l2
    assert noisy.hub_accuracy < pca.hub_accuracy
    assert noisy.accuracy_cost_pp == pytest.approx(
        100 * (pca.cascade_accuracy - noisy.cascade_accuracy), abs=0.02
    )


def test_attribute_probe_sees_the_raw_input_best(report: PrivacyReport) -> None:
    d = report.datasets[0]
    assert d.raw.attribute_probe_accuracy > 0.9
    assert d.recipes[1].attribute_probe_accuracy < d.raw.attribute_probe_accuracy
    assert "Target (error >= 3x" in markdown(report)


def test_metrics_on_known_cases() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 16, (20, 64))
    assert relative_l2(x, x) == 0.0
    assert relative_l2(2 * x, x) == pytest.approx(1.0)
    assert reidentified(x, x) == 1.0
    np.testing.assert_allclose(ssim(x, x, 8, 16.0), 1.0)
    assert ssim(x, 16 - x, 8, 16.0).mean() < 0.2  # the negative image is structurally unlike
