"""The report as Markdown tables (docs/benchmarks.md and the CLI)."""

from __future__ import annotations

from escalade.cascade_bench.report import CascadeReport, Estimate


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
    lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in r.targets:
        lines.append(f"| {t.name} | {t.goal} | {t.measured} | {'yes' if t.met else 'no'} |")
    return "\n".join(lines) + "\n"
