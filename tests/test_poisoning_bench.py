"""The attack benchmark, reduced (`quick=True`), on the session's real bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escalade.console import print_poisoning_report
from escalade.poisoning_bench import PoisoningReport, run_poisoning_bench
from escalade.poisoning_bench.audit_sim import RATES, STRATEGIES
from escalade.poisoning_bench.run import AUDITED


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
    (row,) = [a for a in report[0].attacks if a.name == "mimicry" and a.audit_reveal is None]
    assert row.auroc < 0.7
    assert row.undetected_success_rate > 0.5


# --- harm before quarantine, audits, colluding groups ------------------------------------------


def test_every_attack_entry_says_its_harm_before_quarantine(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    data = json.loads(report[0].model_dump_json())
    for row in data["attacks"]:
        assert {"audit_rate", "messages_to_quarantine", "flipped_before_quarantine"} <= set(row)
        m = row["messages_to_quarantine"]
        assert m is None or 1 <= m <= report[0].drift.messages_per_device
        assert row["flipped_before_quarantine"] >= 0
        assert 0 <= row["quarantined_within_300"] <= row["quarantined_share"]
    # Refused outright, every message: quarantined by reputation, never answered wrongly.
    (x10,) = [a for a in report[0].attacks if (a.name, a.strength) == ("scaling", "x10")]
    assert x10.quarantined_share == 1.0
    assert x10.flipped_before_quarantine == 0
    # Unseen by the statistics and audits off: never quarantined, harm grows with strength.
    base = {(a.name, a.strength): a for a in report[0].attacks if a.audit_reveal is None}
    assert base["gradient", "l2_2"].messages_to_quarantine is None
    assert (
        base["gradient", "l2_2"].flipped_before_quarantine
        > base["gradient", "l2_0.5"].flipped_before_quarantine
    )


def test_the_sign_flip_is_caught_per_message(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    (row,) = [a for a in report[0].attacks if a.name == "sign_flip"]
    assert row.tpr_at_1pct_fpr >= 0.99
    assert row.undetected_success_rate <= 0.01
    assert row.quarantined_share == 1.0
    assert row.flipped_before_quarantine <= 1


def test_attackers_that_answer_audits_at_every_rate(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    rows = {
        (a.name, a.strength, a.audit_reveal, a.audit_rate): a
        for a in report[0].attacks
        if a.audit_reveal is not None
    }
    assert {(n, s) for n, s, _, _ in rows} == set(AUDITED)
    assert {r for *_, r in rows} == set(RATES)
    assert {s for _, _, s, _ in rows} == set(STRATEGIES)
    assert len(rows) == len(AUDITED) * len(RATES) * len(STRATEGIES)
    # Revealing the true input at 5%: caught, and far sooner than with audits off.
    caught = rows["mimicry", "l2_2", "honest_input", 0.05]
    assert caught.quarantined_share == 1.0
    (unaudited,) = [a for a in report[0].attacks if a.name == "mimicry" and a.audit_reveal is None]
    assert caught.flipped_before_quarantine < unaudited.flipped_before_quarantine / 2
    # A refusal waits out the deadline; a crafted preimage of a linear encoder passes.
    refused = rows["mimicry", "l2_2", "refuse", 0.05].messages_to_quarantine
    assert caught.messages_to_quarantine is not None
    assert refused is not None
    assert refused > caught.messages_to_quarantine
    crafted = rows["gradient", "l2_2", "crafted_input", 0.05]
    assert crafted.quarantined_share < 0.5


def test_honest_devices_are_never_quarantined_with_audits_on(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    r = report[0]
    assert [h.audit_rate for h in r.honest_fleet] == [0.0, *RATES]
    for h in r.honest_fleet:
        assert h.false_quarantines == 0
        assert h.worst_distance < r.audit_tolerance
    assert r.honest_fleet[-1].audits > r.honest_fleet[1].audits > 0
    assert r.audit_cost_us > 0


def test_colluders_stay_within_the_bound_the_code_claims(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
) -> None:
    learned = [g for g in report[0].influence if g.learns_from_traffic]
    assert [g.colluders for g in learned] == [2, 5, 10]
    for g in learned:
        assert g.measured_unconstrained is not None
        assert g.measured_in_band is not None
        assert g.measured_in_band <= g.measured_unconstrained + 1e-4
        # The optimiser reaches the bound (it is tight) and never passes it.
        assert g.measured_unconstrained == pytest.approx(g.bound, abs=1e-4)
        assert g.honest_flagged == 0
    assert learned[0].bound < learned[-1].bound
    static = [g for g in report[0].influence if not g.learns_from_traffic]
    assert static
    assert all(g.bound == 0 for g in static)


def test_the_printed_table_has_a_harm_column(
    report: tuple[PoisoningReport, list[tuple[str, int, int]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_poisoning_report(report[0])
    out = capsys.readouterr().out
    assert "harm before" in out
    assert "Attackers that answer audits" in out
    assert "Colluding groups" in out
