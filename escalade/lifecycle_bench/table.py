"""The report as the markdown tables docs/benchmarks.md carries."""

from __future__ import annotations

from escalade.lifecycle_bench.report import LifecycleReport


def markdown(report: LifecycleReport) -> str:
    a = report.adapter
    lines = [
        f"Lifecycle on {report.dataset} (seed {report.seed}{', quick' if report.quick else ''}):"
        f" adapters {a.v2} -> {a.v1} on {a.pairs} public pairs",
        "",
        "| adapter | hub(adapter(v2)) | hub retrained on v2 | gap |",
        "| --- | --- | --- | --- |",
    ]
    for r in a.results:
        lines.append(
            f"| {r.kind} | {r.adapted_hub_accuracy:.2%} | {r.retrained_hub_accuracy:.2%} "
            f"| {r.gap_pp:+.2f} pp |"
        )
    lines += [
        "",
        "| round | escalation (clean) | cascade acc. (clean) | edge acc. (clean) "
        "| edge acc. (5% poisoners) | distill samples (clean / poisoned) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c, p in zip(report.loop.rounds, report.poisoned_loop.rounds, strict=True):
        lines.append(
            f"| {c.round} | {c.escalation_rate:.1%} | {c.cascade_accuracy:.2%} "
            f"| {c.edge_accuracy:.2%} | {p.edge_accuracy:.2%} "
            f"| {c.distill_samples} / {p.distill_samples} |"
        )
    lines += ["", "| bad bundle | devices stopping it | requests failed | codes |"]
    lines.append("| --- | --- | --- | --- |")
    for b in report.bad_bundles:
        lines.append(
            f"| {b.name} | {b.refused_or_rolled_back}/{b.devices} "
            f"| {b.requests_failed}/{b.requests_served} | {', '.join(b.codes)} |"
        )
    lines += ["", "| target | figure | met |", "| --- | --- | --- |"]
    for t in report.targets:
        lines.append(f"| {t.name} | {t.figure} | {'yes' if t.met else 'MISSED'} |")
    return "\n".join(lines)
