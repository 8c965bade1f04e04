"""The privacy report as markdown tables."""

from __future__ import annotations

from escalade.privacy_bench.report import PrivacyReport


def markdown(report: PrivacyReport) -> str:
    lines: list[str] = []
    for d in report.datasets:
        lines += [
            f"## {d.dataset}: {d.victims} victims, attackers trained on {d.public} public inputs",
            "",
            "| sent | bytes | attacker | relative L2 | SSIM | re-identified | ink probe |",
            "|---|---|---|---|---|---|---|",
            f"| raw input | {d.raw.wire_bytes} | - | 0 | 1 | 1 "
            f"| {d.raw.attribute_probe_accuracy:.3f} |",
        ]
        for r in d.recipes:
            for a in r.attackers:
                lines.append(
                    f"| {r.model_id} | {r.wire_bytes} | {a.attacker} | {a.relative_l2:.3f} "
                    f"| {a.ssim:.3f} | {a.reidentified:.3f} | {r.attribute_probe_accuracy:.3f} |"
                )
        lines += ["", "| recipe | noise sigma | hub acc | cascade acc | cost pp | best L2 | SSIM |"]
        lines.append("|---|---|---|---|---|---|---|")
        for r in d.recipes:
            lines.append(
                f"| {r.model_id} | 0 | {r.hub_accuracy:.4f} | {r.cascade_accuracy:.4f} | 0 "
                f"| {r.best_relative_l2:.3f} | {r.best_ssim:.3f} |"
            )
            lines.extend(
                f"| {r.model_id} | {n.sigma:g} | {n.hub_accuracy:.4f} | {n.cascade_accuracy:.4f} "
                f"| {n.accuracy_cost_pp:.2f} | {n.best_relative_l2:.3f} | {n.best_ssim:.3f} |"
                for n in r.noise
            )
        verdict = "met" if d.target_met else "NOT met"
        lines += [
            "",
            f"Target (error >= 3x the default recipe's at <= 0.5 pp cascade accuracy): {verdict}"
            f" - {d.private_recipe}: {d.error_ratio:.2f}x, cost {d.accuracy_cost_pp:+.2f} pp",
            "",
        ]
    lines.append(f"({report.seconds:.0f} s)")
    return "\n".join(lines)
