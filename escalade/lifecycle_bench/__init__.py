"""`escalade bench lifecycle`: adapters across encoder versions, the closed loop over simulated
days (clean and with a poisoned minority), and bad bundles on every simulated device."""

from escalade.lifecycle_bench.report import LifecycleReport
from escalade.lifecycle_bench.run import run_lifecycle_bench
from escalade.lifecycle_bench.table import markdown

__all__ = ["LifecycleReport", "markdown", "run_lifecycle_bench"]
