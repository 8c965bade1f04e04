"""Cascade benchmark: routing policies compared on accuracy, escalation, bytes, latency, cost."""

from escalade.cascade_bench.plot import plot_curves
from escalade.cascade_bench.report import CascadeReport
from escalade.cascade_bench.run import run_cascade_bench
from escalade.cascade_bench.table import markdown

__all__ = ["CascadeReport", "markdown", "plot_curves", "run_cascade_bench"]
