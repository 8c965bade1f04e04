"""The report as Markdown tables (docs/benchmarks.md and the CLI)."""

from __future__ import annotations

from escalade.cascade_bench.report import CascadeReport, Estimate, NetworkReport


def _pct(e: Estimate | None, signed: bool = False) -> str:
    if e is None:
        return "-"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"{f.format(100 * e.mean)} [{f.format(100 * e.low)}, {f.format(100 * e.high)}]"


def _num(e: Estimate | None) -> str:
    return "-" if e is None else f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(report: CascadeReport) -> str:
    r = report
    lines = [
        f"**{r.dataset}**, seeds {r.seeds}, {r.test_inputs} test inputs per seed, "
        f"{r.bootstrap_resamples} paired bootstrap resamples (95% intervals in brackets); "
        f"edge-only {_pct(r.edge_accuracy)} %, hub-only {_pct(r.hub_accuracy)} %.",
        "",
        "| policy | accuracy % | vs edge (pp) | vs hub (pp) | escalated % | APGR | CPT50 % "
        "| CPT80 % | CPT95 % | bytes/input | x fewer than raw | latency mean / p95 ms "
        "| cost / 1k |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r.policies:
        cpts = ["-" if c is None else f"{100 * c.mean:.1f}" for c in (p.cpt50, p.cpt80, p.cpt95)]
        lines.append(
            f"| {p.name} | {_pct(p.accuracy)} | {_pct(p.delta_vs_edge, True)} "
            f"| {_pct(p.delta_vs_hub, True)} | {100 * p.escalation_rate.mean:.1f} "
            f"| {_num(p.apgr)} | {' | '.join(cpts)} | {p.bytes_per_input:.0f} "
            f"| {_ratio(p.bytes_reduction_vs_raw)} "
            f"| {p.latency_mean_ms:.2f} / {p.latency_p95_ms:.2f} "
            f"| {p.cost_per_1k:.3f} |"
        )
    lines += [
        "",
        f"Envelope: {r.wire.embedding_envelope_bytes} B per escalated embedding; raw upload "
        f"{r.wire.raw_envelope_bytes} B ({r.wire.raw_encoding}). Model times (median, one "
        f"thread, this machine): encoder {r.timings.encoder_us:.1f} µs, head "
        f"{r.timings.head_us:.1f} µs, hub {r.timings.hub_us:.1f} µs; network RTT {r.rtt_ms:g} "
        f"ms, uplink {r.uplink_mbps:g} Mbit/s; hub price {r.hub_price:g} per escalation.",
        "",
        "| online vs fixed (after warm-up) | online acc % | online esc % | fixed acc % "
        "| fixed esc % | fixed curve at online esc % |",
        "|---|---|---|---|---|---|",
    ]
    for seed, o in zip(r.seeds, r.online, strict=True):
        lines.append(
            f"| seed {seed} (warm-up {o.warmup_inputs}) | {100 * o.online_accuracy:.2f} "
            f"| {100 * o.online_escalation_rate:.1f} | {100 * o.fixed_accuracy:.2f} "
            f"| {100 * o.fixed_escalation_rate:.1f} "
            f"| {100 * o.fixed_curve_accuracy_at_online_rate:.2f} |"
        )
    if r.network is not None:
        lines += ["", *network_lines(r.network)]
    lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in r.targets:
        lines.append(f"| {t.name} | {t.goal} | {t.measured} | {'yes' if t.met else 'no'} |")
    return "\n".join(lines) + "\n"


def network_lines(n: NetworkReport) -> list[str]:
    """The model network's policies, all at one escalation mask, against hub-only and the
    monolith (the largest model for every input)."""
    costs = ", ".join(
        f"{name} {price:.3g}/1k, {ms * 1000:.0f} µs" for name, (price, ms) in n.model_costs.items()
    )
    lines = [
        f"Model network, local max probability below the calibration split's "
        f"{n.escalation_budget:.0%} quantile escalated; hub-only (generalist for every input) "
        f"{100 * n.hub_only_accuracy:.2f} %, monolith ({n.monolith} for every input) "
        f"{100 * n.monolith_accuracy:.2f} % at {n.monolith_cost_per_1k:.3g} per 1k and "
        f"{n.monolith_latency_ms:.2f} ms mean. Models (declared price per 1k inputs, measured "
        f"time at batch 1): {costs}. {n.article}.",
        "",
        "| policy | accuracy % | vs hub-only (pp) | vs monolith (pp) | escalated % | cost / 1k "
        "| cost vs monolith | latency ms | latency vs monolith |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in n.policies:
        lines.append(
            f"| {p.name} | {100 * p.accuracy:.2f} | {_pct(p.delta_vs_hub, True)} "
            f"| {100 * p.delta_vs_monolith:+.2f} | {100 * p.escalation_rate:.1f} "
            f"| {p.cost_per_1k:.3f} | {p.cost_vs_monolith:+.0%} | {p.latency_mean_ms:.2f} "
            f"| {p.latency_vs_monolith:+.0%} |"
        )
    lines += [
        "",
        "| meta-router, per seed | regret vs best fixed arm after warm-up (pp) | best fixed arm "
        "| explored % | own cost / routed models, batched | single request |",
        "|---|---|---|---|---|---|",
    ]
    for i, regret in enumerate(n.router_regret_pp):
        lines.append(
            f"| seed {i} | {regret:+.2f} | {n.router_best_fixed[i]} "
            f"| {100 * n.router_explored[i]:.1f} | {n.router_cost_share_batched[i]:.2%} "
            f"| {n.router_cost_share_single[i]:.2%} |"
        )
    return lines
