"""The issue's targets, checked against a report (measured values, met or not)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from escalade.cascade_bench.report import CascadeReport, PolicyResult, Target

MATCH_TOLERANCE = 0.005  # "match hub-only accuracy": within half a point
THRESHOLD_POLICIES = ("max_probability", "margin", "neg_entropy", "learned")


def check_targets(report: CascadeReport) -> list[Target]:
    from escalade.cascade_bench.report import Target

    by_name = {p.name: p for p in report.policies}
    signals = [by_name[s] for s in THRESHOLD_POLICIES]
    matching = [p for p in signals if p.delta_vs_hub.mean >= -MATCH_TOLERANCE]
    cheapest: PolicyResult = min(
        matching or signals, key=lambda p: (p.escalation_rate.mean, -p.accuracy.mean)
    )
    best_apgr = max(signals, key=lambda p: p.apgr.mean if p.apgr else 0.0)
    best_cpt = min(signals, key=lambda p: p.cpt50.mean if p.cpt50 else 1.0)
    assert best_apgr.apgr is not None
    assert best_cpt.cpt50 is not None
    reduction = cheapest.bytes_reduction_vs_raw or float("inf")
    online_gap = sum(
        o.online_accuracy - o.fixed_curve_accuracy_at_online_rate for o in report.online
    ) / len(report.online)
    return [
        Target(
            name="match hub-only accuracy",
            goal=f"within {MATCH_TOLERANCE:.1%} of hub-only at <= 40% escalation",
            measured=(
                f"{cheapest.name}: {cheapest.delta_vs_hub.mean:+.2%} vs hub at "
                f"{cheapest.escalation_rate.mean:.1%} escalated"
            ),
            met=bool(matching) and cheapest.escalation_rate.mean <= 0.40,
        ),
        Target(
            name="APGR",
            goal=">= 0.88",
            measured=f"{best_apgr.name}: {best_apgr.apgr.mean:.3f}",
            met=best_apgr.apgr.mean >= 0.88,
        ),
        Target(
            name="CPT(50%)",
            goal="<= 10% escalation",
            measured=f"{best_cpt.name}: {best_cpt.cpt50.mean:.1%}",
            met=best_cpt.cpt50.mean <= 0.10,
        ),
        Target(
            name="bytes vs raw upload",
            goal=">= 20x fewer at the match-hub operating point",
            measured=f"{cheapest.name}: {reduction:.1f}x",
            met=reduction >= 20.0,
        ),
        Target(
            name="online vs fixed threshold after warm-up",
            goal="accuracy >= the fixed-threshold curve at the online escalation rate",
            measured=f"{online_gap:+.2%} (mean over seeds)",
            met=online_gap >= 0.0,
        ),
    ]
