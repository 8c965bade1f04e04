"""The graph benchmark's figures, as one frozen report (JSON with `--json`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Latency(_Report):
    """p50 microseconds per input, the same inputs and nodes, interleaved in one run."""

    inputs: int
    parallel_p50_us: float
    sequential_p50_us: float
    # parallel / sequential: below 1 the threads pay.
    ratio: float


class StageCost(_Report):
    nodes: list[str]
    sequential_us: float
    parallel_us: float
    # Mean cost of one node of the stage run alone (µs): what threads could overlap.
    node_us: float
    chosen: str  # "parallel" or "sequential", as calibrated


class Crossover(_Report):
    """One width of the synthetic branch stage (escalade/graph_bench/synthetic.py)."""

    width: int
    node_us: float  # one expert alone
    sequential_us: float  # the five branches in sequence
    parallel_us: float  # the five in threads
    ratio: float  # parallel / sequential


class Policy(_Report):
    name: str
    accuracy: float
    escalation_rate: float


class GraphBenchReport(_Report):
    dataset: str
    model_id: str
    graph: str
    inputs: int
    quick: bool
    # The graph as a whole, and only the inputs that went past the gate (the branch stage ran).
    latency_all: Latency
    latency_past_gate: Latency
    stages: list[StageCost]
    ended_early: float  # share of graphs the confident gate ended
    policies: list[Policy]
    # The same stage shape with random MLP nodes of growing width: where threads start to pay.
    crossover: list[Crossover]
    note: str
