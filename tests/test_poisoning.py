"""Poisoning checks: reference statistics from a real bundle, tiers, reputation, cohort, k-NN."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cloud_hub.poisoning import (
    CheckResult,
    EmbeddingChecker,
    KnnAuditor,
    ReferenceStats,
    ReferenceStatsError,
    Reputation,
    ReputationParams,
    calibrate,
    cohort_outliers,
    release,
    should_quarantine,
    update,
)
from escalade.modelbuild.stats import embedding_statistics
from escalade.poisoning_bench.models import BundleModels

F32 = NDArray[np.float32]


class Clean:
    def __init__(self, bundle_dir: Path) -> None:
        self.models = BundleModels(bundle_dir)
        self.stats = ReferenceStats.load(bundle_dir / "calibration.npz")
        self.checker = EmbeddingChecker(self.stats)
        self.x = self.models.embed(self.models.x_test)
        self.answer = self.models.predict(self.x)
        self.results = [
            self.checker.check(e, int(c)) for e, c in zip(self.x, self.answer, strict=True)
        ]


@pytest.fixture(scope="module")
def clean(bundle_dir: Path) -> Clean:
    return Clean(bundle_dir)


# -- reference statistics --------------------------------------------------------------------


def test_calibration_keeps_old_keys_and_adds_the_tiers(bundle_dir: Path) -> None:
    data = np.load(bundle_dir / "calibration.npz")
    old = {"mean", "covariance", "precision", "class_means", "norm_low", "norm_high"}
    new = {"whitening", "mahalanobis_low", "class_mahalanobis_high", "target_fpr"}
    assert old | {"mahalanobis_threshold"} | new <= set(data.files)
    assert all(data[k].dtype == np.float64 for k in data.files)
    w, precision = data["whitening"], data["precision"]
    np.testing.assert_allclose(w.T @ w, precision, rtol=1e-8, atol=1e-10)
    assert data["target_fpr"].item() == 0.01
    # Fitted on the training split, thresholded on the calibration split: no overlap.
    assert data["fit_count"].item() > data["threshold_count"].item() > 300


def test_reference_stats_load_and_whitened_distance(clean: Clean) -> None:
    s = clean.stats
    assert (s.dim, s.num_classes) == (32, 10)
    assert 0 < s.norm_low < s.norm_high
    assert 0 < s.mahalanobis_low < s.mahalanobis_high
    x = clean.x[0].astype(np.float64)
    direct = math.sqrt((x - s.mean) @ s.precision @ (x - s.mean))
    assert clean.results[0].mahalanobis == pytest.approx(direct, rel=1e-4)


def test_clean_test_split_is_refused_near_the_target_rate(clean: Clean) -> None:
    refused = np.mean([not r.passed for r in clean.results])
    assert refused <= 3 * clean.stats.target_fpr  # 3 of 360 measured; conformal bound 1%


def test_old_calibration_files_are_refused_with_a_clear_error(clean: Clean, tmp_path: Path) -> None:
    path = tmp_path / "old.npz"
    np.savez(path, mean=clean.stats.mean, precision=clean.stats.precision)
    with pytest.raises(ReferenceStatsError, match="rebuild the bundle"):
        ReferenceStats.load(path)


def test_statistics_hold_back_a_threshold_split_when_given_none() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 4000).astype(np.int64)
    x = rng.standard_normal((4000, 8)) + 3 * np.eye(8)[y]
    arrays = embedding_statistics(x, y, target_fpr=0.05)
    fit, held = arrays["fit_count"].item(), arrays["threshold_count"].item()
    assert fit + held == 4000
    assert abs(fit - held) <= 3  # every other example of each class
    stats = ReferenceStats.from_arrays(arrays)
    fresh_y = rng.integers(0, 3, 4000).astype(np.int64)
    fresh = rng.standard_normal((4000, 8)) + 3 * np.eye(8)[fresh_y]
    rate = 1 - EmbeddingChecker(stats).check_batch(fresh, fresh_y).passed.mean()
    assert 0.02 < rate < 0.08  # target 5%, split-conformal


# -- per-request tiers -------------------------------------------------------------------------


@pytest.mark.parametrize(("factor", "reason"), [(10.0, "norm"), (0.3, "norm")])
def test_scaled_embeddings_fail_the_norm_tier_first(
    clean: Clean, factor: float, reason: str
) -> None:
    result = clean.checker.check(clean.x[0] * factor, int(clean.answer[0]))
    assert (result.passed, result.reason) == (False, reason)
    assert result.score > 1
    assert math.isnan(result.mahalanobis)


def test_an_embedding_pulled_onto_a_centroid_fails_mahalanobis(clean: Clean) -> None:
    s = clean.stats
    reasons = set()
    for e, c in zip(clean.x[:50], clean.answer[:50], strict=True):
        target = s.class_means[(c + 1) % s.num_classes]
        shifted = (e + 0.6 * (target - e)).astype(np.float32)
        reasons.add(
            clean.checker.check(shifted, int(clean.models.predict(shifted[None])[0])).reason
        )
    assert "mahalanobis" in reasons
    assert None not in reasons


def test_the_wrong_class_fails_the_class_tier(clean: Clean) -> None:
    s = clean.stats
    results = []
    for e in clean.x[:50]:
        far = int(np.argmax(np.linalg.norm((s.class_means - e) @ s.whitening.T, axis=1)))
        results.append(clean.checker.check(e, far))
    assert any(r.reason == "class_mahalanobis" for r in results)


@settings(max_examples=60, deadline=None)
@given(
    index=st.integers(0, 359),
    change=st.tuples(st.floats(0.2, 3.0), st.floats(0.0, 2.0)),
    cls=st.integers(0, 9),
    seed=st.integers(0, 2**16),
)
def test_check_agrees_with_the_batch_path_and_score_decides(
    clean: Clean, index: int, change: tuple[float, float], cls: int, seed: int
) -> None:
    scale, noise = change
    rng = np.random.default_rng(seed)
    x = (clean.x[index] * scale + noise * rng.standard_normal(32)).astype(np.float32)
    single = clean.checker.check(x, cls)
    batch = clean.checker.check_batch(x[None], np.array([cls])).result(0)
    assert (single.passed, single.reason) == (batch.passed, batch.reason)
    assert single.score == pytest.approx(batch.score, rel=1e-5)
    assert single.passed == (single.score <= 1)
    assert (single.reason is None) == single.passed


# -- reputation --------------------------------------------------------------------------------

PARAMS = ReputationParams()


def _result(passed: bool, score: float) -> CheckResult:
    return CheckResult(passed, None if passed else "mahalanobis", score, 1.0, 1.0, 1.0)


def test_calibrated_allowance_is_close_to_the_default(clean: Clean) -> None:
    scores = clean.checker.check_batch(clean.x, clean.answer)
    k = calibrate(scores.score, scores.passed).drift_allowance
    assert abs(k - PARAMS.drift_allowance) < 0.03


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 1e6)), max_size=300))
def test_cusum_stays_within_zero_and_the_ceiling(stream: list[tuple[bool, float]]) -> None:
    rep = Reputation()
    for passed, score in stream:
        rep = update(rep, _result(passed, min(score, 1.0) if passed else score), PARAMS)
        assert 0.0 <= rep.cusum <= PARAMS.ceiling
    assert rep.messages == len(stream)
    assert rep.failures == sum(not p for p, _ in stream)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_honest_streams_never_quarantine(clean: Clean, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rep = Reputation()
    for i in rng.integers(0, len(clean.results), 2000):
        rep = update(rep, clean.results[i], PARAMS)
    assert rep.state == "active"
    assert not should_quarantine(rep, PARAMS)


@settings(max_examples=100, deadline=None)
@given(
    excess=st.floats(0.01, 1.0),
    failure_rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_a_sustained_shift_always_quarantines(
    excess: float, failure_rate: float, seed: int
) -> None:
    """Any stream whose mean statistic exceeds k by `excess` is quarantined, in bounded time."""
    rng = np.random.default_rng(seed)
    k, fail = PARAMS.drift_allowance, PARAMS.failure_score
    # Passing messages at score s, failing ones at the failure score: mean = k + excess.
    target = k + excess * (fail - k)
    passing = (target - failure_rate * fail) / (1 - failure_rate) if failure_rate < 1 else 1.0
    if not 0.0 <= passing <= 1.0:
        failure_rate = (target - 1.0) / (fail - 1.0) if target > 1 else 0.0
        passing = 1.0 if target > 1 else target
    rep = Reputation()
    budget = 40 * int(PARAMS.decision_limit / (excess * (fail - k)) + PARAMS.hold + 1)
    for _ in range(budget):
        failed = rng.random() < failure_rate
        rep = update(rep, _result(not failed, fail if failed else passing), PARAMS)
        if rep.state == "quarantined":
            break
    assert rep.state == "quarantined"
    assert should_quarantine(rep, PARAMS)


def test_one_noisy_spell_does_not_quarantine_and_recovers(clean: Clean) -> None:
    rep = Reputation()
    for _ in range(15):  # fifteen refused messages in a row
        rep = update(rep, _result(False, 50.0), PARAMS)
    assert rep.state == "active"
    assert rep.cusum == pytest.approx(15 * (PARAMS.failure_score - PARAMS.drift_allowance))
    for result in clean.results[:300]:
        rep = update(rep, result, PARAMS)
    assert rep.state == "active"
    assert rep.cusum < 1.0


def test_quarantine_is_sticky_until_released() -> None:
    rep = Reputation()
    while rep.state == "active":
        rep = update(rep, _result(False, 3.0), PARAMS)
    assert (
        rep.messages
        == math.ceil(PARAMS.decision_limit / (PARAMS.failure_score - PARAMS.drift_allowance))
        + PARAMS.hold
        - 1
    )
    rep = update(rep, _result(True, 0.1), PARAMS)
    assert rep.state == "quarantined"
    released = release(rep)
    assert (released.state, released.cusum, released.messages) == ("active", 0.0, rep.messages)


def test_inconsistent_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        ReputationParams(decision_limit=50.0, ceiling=40.0)


# -- cohort and k-NN ---------------------------------------------------------------------------


def _window_means(clean: Clean, devices: int, window: int, seed: int) -> dict[str, F32]:
    rng = np.random.default_rng(seed)
    return {f"h{i:03d}": clean.x[rng.integers(0, 360, window)].mean(axis=0) for i in range(devices)}


def test_honest_fleet_raises_no_cohort_flags(clean: Clean) -> None:
    means = _window_means(clean, 60, 50, seed=3)
    threshold = math.sqrt(32 / 50) + 5 * math.sqrt(1 / 100)
    assert cohort_outliers(means, clean.stats, threshold) == []


def test_colluders_and_a_lone_outlier_are_flagged(clean: Clean) -> None:
    s = clean.stats
    means = _window_means(clean, 60, 50, seed=4)
    offset = 0.6 * (s.class_means[3] - s.class_means[8])
    for i in range(5):
        means[f"c{i}"] = means.pop(f"h{i:03d}") + offset
    lone = 2.0 * (s.class_means[1] - s.class_means[0])
    means["lone"] = means.pop("h010") + lone
    flags = cohort_outliers(means, s, 1.3)
    colluding = {f.device_id for f in flags if f.reason == "collusion"}
    assert colluding == {f"c{i}" for i in range(5)}
    assert {f.group for f in flags if f.reason == "collusion"} == {tuple(f"c{i}" for i in range(5))}
    assert "lone" in {f.device_id for f in flags if f.reason == "fleet_outlier"}
    assert not any(f.device_id.startswith("h") for f in flags)
    assert cohort_outliers({}, s, 1.3) == []


def test_knn_audit_flags_random_vectors_off_the_clean_manifold(clean: Clean) -> None:
    bank, holdout = clean.x[:240], clean.x[240:]
    auditor = KnnAuditor(clean.stats, bank, holdout, k=3, target_fpr=0.05)
    rng = np.random.default_rng(5)
    g = rng.standard_normal((200, 32))
    random = (g / np.linalg.norm(g, axis=1, keepdims=True) * 5.6).astype(np.float32)
    assert auditor.audit(random).mean() > 0.8
    assert auditor.audit(holdout).mean() <= 0.06
    with pytest.raises(ValueError, match="too small"):
        KnnAuditor(clean.stats, bank[:3], holdout, k=3)
