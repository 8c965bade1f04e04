"""Task graph benchmark: parallel branches against the same nodes in sequence, early exits,
and the graph's accuracy against the plain cascade (`escalade bench graph`)."""

from escalade.graph_bench.report import GraphBenchReport
from escalade.graph_bench.run import bench_bundle, run_graph_bench
from escalade.graph_bench.table import markdown

__all__ = ["GraphBenchReport", "bench_bundle", "markdown", "run_graph_bench"]
