"""Attack benchmark for the hub's poisoning checks (`escalade bench poisoning`)."""

from escalade.poisoning_bench.report import PoisoningReport
from escalade.poisoning_bench.run import run_poisoning_bench

__all__ = ["PoisoningReport", "run_poisoning_bench"]
