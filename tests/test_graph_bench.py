"""`escalade bench graph --quick` end to end: it builds a bundle and its graph, times the graph
both ways, and writes figures that agree with each other."""

from __future__ import annotations

from pathlib import Path

from escalade.cli import main
from escalade.graph_bench import GraphBenchReport


def test_quick_graph_bench_writes_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    assert main(["bench", "graph", "--quick", "--json", str(out)]) == 0
    report = GraphBenchReport.model_validate_json(out.read_text())
    assert report.quick
    assert report.inputs == 120
    assert 0.0 < report.ended_early < 1.0
    assert report.latency_past_gate.inputs == round(report.inputs * (1 - report.ended_early))
    for latency in (report.latency_all, report.latency_past_gate):
        assert latency.ratio == latency.parallel_p50_us / latency.sequential_p50_us
    (stage,) = report.stages
    assert stage.nodes == ["groups", "group0", "group1", "group2"]
    assert stage.chosen == ("parallel" if stage.parallel_us < stage.sequential_us else "sequential")
    policies = {p.name: p for p in report.policies}
    assert policies["hub only"].escalation_rate == 1.0
    graph = policies["graph (gate, specialists, then hub)"]
    # The hub sees only inputs the gate did not settle.
    assert graph.escalation_rate <= 1.0 - report.ended_early
    assert all(0.5 < p.accuracy <= 1.0 for p in report.policies)
    # The synthetic widths: a wider node costs more, and the ratio is the two timings'.
    assert [c.width for c in report.crossover] == [16, 512]
    assert report.crossover[1].node_us > report.crossover[0].node_us
    assert all(c.ratio == c.parallel_us / c.sequential_us for c in report.crossover)


def test_an_unknown_dataset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert main(["bench", "graph", "--quick", "--dataset", "nonesuch"]) == 2
