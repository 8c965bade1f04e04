"""The attack benchmark, reduced (`quick=True`), on the session's real bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escalade.poisoning_bench import PoisoningReport, run_poisoning_bench


@pytest.fixture(scope="module")
def report(bundle_dir: Path) -> tuple[PoisoningReport, list[tuple[str, int, int]]]:
    steps: list[tuple[str, int, int]] = []
    result = run_poisoning_bench(
        bundle_dir=bundle_dir, quick=True, on_step=lambda *s: steps.append(s)
    )
    return result, steps


def _tpr(report: PoisoningReport, name: str, strength: str | None = None) -> list[float]:
    rows = [a for a in report.attacks if a.name == name and strength in (None, a.strength)]
    assert rows, (name, strength)
    return [a.tpr_at_1pct_fpr for a in rows]


def test_json_has_the_documented_structure(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    data = json.loads(report[0].model_dump_json())
    names = {a["name"] for a in data["attacks"]}
    assert {
        "malformed", "scaling", "noise", "random", "centroid_shift", "gradient", "mimicry",
        "replay", "natural_drift",
    } <= names  # fmt: skip
    for row in data["attacks"]:
        assert {"name", "strength", "auroc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr",
                "undetected_success_rate"} <= set(row)  # fmt: skip
        assert 0.0 <= row["auroc"] <= 1.0
    assert {"messages_to_quarantine", "false_quarantines", "honest_devices"} <= set(data["drift"])
    assert data["latency_us"]["dim"] == 384
    assert data["latency_us_native"]["dim"] == 32
    assert 0 < data["latency_us"]["p50"] <= data["latency_us"]["p99"]
    assert PoisoningReport.model_validate_json(report[0].model_dump_json()) == report[0]


def test_progress_covers_every_stage(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    stages = {d for d, _, _ in report[1]}
    assert {"honest traffic", "attacks", "reputation", "cohort", "latency"} <= stages
    assert all(0 <= done <= total for _, done, total in report[1])


def test_easy_attacks_are_caught_at_the_target_rates(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    r = report[0]
    assert _tpr(r, "malformed") == [1.0] * 4
    assert _tpr(r, "replay") == [1.0]
    assert min(_tpr(r, "scaling")) >= 0.99
    assert min(_tpr(r, "noise", "snr_-10db")) >= 0.99
    assert min(_tpr(r, "random", "uniform")) >= 0.99
    assert min(_tpr(r, "centroid_shift", "alpha_0.6")) >= 0.95
    assert r.clean_flag_rate <= 0.03


def test_slow_drift_is_quarantined_and_honest_devices_are_not(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    r = report[0]
    assert r.drift.messages_to_quarantine is not None
    assert r.drift.messages_to_quarantine <= 1000
    assert r.drift.false_quarantines == 0
    assert r.cohort.colluders_flagged == r.cohort.colluders
    assert r.cohort.honest_flagged == 0


def test_mimicry_is_reported_near_chance(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    (row,) = [a for a in report[0].attacks if a.name == "mimicry"]
    assert row.auroc < 0.7
    assert row.undetected_success_rate > 0.5
