"""The graph benchmark as a markdown table (what docs/benchmarks.md quotes)."""

from __future__ import annotations

from escalade.graph_bench.report import GraphBenchReport, Latency


def _row(label: str, lat: Latency) -> str:
    return (
        f"| {label} | {lat.inputs} | {lat.parallel_p50_us:.0f} | {lat.sequential_p50_us:.0f} "
        f"| **{lat.ratio:.2f}x** |"
    )


def markdown(report: GraphBenchReport) -> str:
    lines = [
        f"### Task graph `{report.graph}` ({report.dataset}, {report.inputs} test inputs"
        f"{', quick' if report.quick else ''})",
        "",
        "| inputs | n | parallel p50 µs | sequential p50 µs | parallel / sequential |",
        "|---|---|---|---|---|",
        _row("all", report.latency_all),
        _row("past the gate", report.latency_past_gate),
        "",
        "| branch stage | node alone µs | sequential µs | parallel µs | calibrated |",
        "|---|---|---|---|---|",
    ]
    for s in report.stages:
        lines.append(
            f"| {', '.join(s.nodes)} | {s.node_us:.1f} | {s.sequential_us:.1f} "
            f"| {s.parallel_us:.1f} | {s.chosen} |"
        )
    lines += [
        "",
        f"Ended early at the confident gate: **{report.ended_early:.1%}** of graphs.",
        "",
        "| policy | accuracy | escalated |",
        "|---|---|---|",
    ]
    lines += [f"| {p.name} | {p.accuracy:.2%} | {p.escalation_rate:.1%} |" for p in report.policies]
    lines += [
        "",
        "Where threads pay: the same stage shape (a group gate and four experts side by side), "
        "random MLP nodes of growing width:",
        "",
        "| width | one node µs | 5 in sequence µs | 5 in threads µs | threads / sequence |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.width} | {c.node_us:.0f} | {c.sequential_us:.0f} | {c.parallel_us:.0f} "
        f"| **{c.ratio:.2f}x** |"
        for c in report.crossover
    ]
    lines += ["", f"({report.note})"]
    return "\n".join(lines)
