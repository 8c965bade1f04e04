"""The issue's targets, checked against a report (measured values, met or not)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from escalade.cascade_bench.report import (
        CascadeReport,
        NetworkReport,
        PolicyResult,
        Target,
    )

MATCH_TOLERANCE = 0.005  # "match hub-only accuracy": within half a point
THRESHOLD_POLICIES = ("max_probability", "margin", "neg_entropy", "learned")


NETWORK_GAIN = 0.005  # the network beats hub-only by half a point
ARTICLE_COST, ARTICLE_LATENCY = -0.73, -0.44
MAX_REGRET_PP = 1.0
MAX_ROUTER_SHARE = 0.02


def network_targets(network: NetworkReport) -> list[Target]:
    """The issue's model-network targets: accuracy over hub-only at <= 20% escalated, cost
    and latency against one large model (the article's figures), the router's regret and
    own cost."""
    from escalade.cascade_bench.report import Target

    candidates = [p for p in network.policies if p.name not in ("cascade", "oracle-arm")]
    best = max(candidates, key=lambda p: p.delta_vs_hub.mean)
    router = next(p for p in network.policies if p.name == "network")
    regret = sum(network.router_regret_pp) / len(network.router_regret_pp)
    share = sum(network.router_cost_share_batched) / len(network.router_cost_share_batched)
    d = best.delta_vs_hub
    return [
        Target(
            name="network beats hub-only",
            goal=f">= +{NETWORK_GAIN:.1%} at <= {network.escalation_budget:.0%} escalated",
            measured=(
                f"{best.name}: {d.mean:+.2%} [{d.low:+.2%}, {d.high:+.2%}] at "
                f"{best.escalation_rate:.1%} escalated"
            ),
            met=d.mean >= NETWORK_GAIN and best.escalation_rate <= network.escalation_budget,
        ),
        Target(
            name="cost vs one large model",
            goal=f"article: {ARTICLE_COST:+.0%}",
            measured=f"{best.name}: {best.cost_vs_monolith:+.0%}; network: "
            f"{router.cost_vs_monolith:+.0%}",
            met=best.cost_vs_monolith <= ARTICLE_COST,
        ),
        Target(
            name="latency vs one large model",
            goal=f"article: {ARTICLE_LATENCY:+.0%}",
            measured=f"{best.name}: {best.latency_vs_monolith:+.0%}; network: "
            f"{router.latency_vs_monolith:+.0%}",
            met=best.latency_vs_monolith <= ARTICLE_LATENCY,
        ),
        Target(
            name="meta-router regret",
            goal=f"<= {MAX_REGRET_PP:g} pp vs the best fixed arm after warm-up",
            measured=f"{regret:+.2f} pp (mean over seeds)",
            met=regret <= MAX_REGRET_PP,
        ),
        Target(
            name="meta-router own cost",
            goal=f"<= {MAX_ROUTER_SHARE:.0%} of the models it routes to",
            measured=f"{share:.2%} batched (mean over seeds)",
            met=share <= MAX_ROUTER_SHARE,
        ),
    ]


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
        *(network_targets(report.network) if report.network is not None else []),
    ]
