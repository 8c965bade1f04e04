"""Accuracy vs escalation rate for every policy, as a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from escalade.cascade_bench.report import CascadeReport


def plot_curves(report: CascadeReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    colors: dict[str, str] = {}
    for name, accuracy in report.curves.items():
        (line,) = ax.plot(report.curve_rates, accuracy, label=name, linewidth=1.4)
        colors[name] = to_hex(line.get_color())
    # Operating points take their curve's colour; policies without a curve are black.
    for name, (rate, point) in report.points.items():
        ax.scatter([rate], [point], s=22, zorder=3, color=colors.get(name, "black"))
        ax.annotate(name, (rate, point), fontsize=7, xytext=(4, -9), textcoords="offset points")
    ax.axhline(report.hub_accuracy.mean, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("escalation rate (share of inputs sent to the hub)")
    ax.set_ylabel("accuracy (test split, mean over seeds)")
    ax.set_title(f"{report.dataset}: accuracy vs escalation, seeds {report.seeds}")
    low = min(report.edge_accuracy.mean, *(min(c) for c in report.curves.values()))
    ax.set_ylim(low - 0.005, max(max(c) for c in report.curves.values()) + 0.005)
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
