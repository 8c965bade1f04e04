"""`escalade bench graph`: the demo's task graph against the same nodes in sequence and against
the plain cascade, on one bundle's test split.

- Latency: every input runs through the graph with its branch stage in threads and in
  sequence, alternately (so drift of the shared machine hits both alike); p50s and their ratio,
  for all inputs and for those that went past the gate.
- Early exit: the share of inputs the confident gate settled.
- Accuracy: the graph (gate, then the mixture of specialists, routed to the hub when the
  router's threshold finds it uncertain) against the plain cascade (head, then the hub) at the
  bundle's calibrated threshold; the hub is the bundle's hub model run in process on the
  float16-rounded embedding, as the cascade bench does.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.graphs import GraphExecutor, Node, Routed, load_graph
from edge_agent.graphs.executor import F32
from escalade.graph_bench.report import GraphBenchReport, Latency, Policy, StageCost
from escalade.graph_bench.synthetic import crossover
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    PROBABILITIES,
    load_manifest,
    verified_path,
)

Progress = Callable[[str, int, int], None]
QUICK_INPUTS = 120
QUICK_TRAIN = 600
WIDTHS = (16, 128, 512, 1024, 2048)
QUICK_WIDTHS = (16, 512)


def _no_progress(description: str, done: int, total: int) -> None:
    pass


def _latency(parallel: list[float], sequential: list[float]) -> Latency:
    p, s = float(np.median(parallel)) * 1e6, float(np.median(sequential)) * 1e6
    return Latency(
        inputs=len(parallel), parallel_p50_us=p, sequential_p50_us=s, ratio=p / s if s else 0.0
    )


def _node_us(executor: GraphExecutor, nodes: tuple[str, ...], x: F32, rounds: int) -> float:
    """Mean over the stage's nodes of each one's median cost alone, on the stage's real input."""
    values: dict[str, F32] = {"input": x.reshape(1, -1)}
    for stage in executor.plan.stages:
        if stage.nodes == nodes:
            break
        values.update(executor.run_stage(stage, values, parallel=False))
    costs = []
    for node_id in nodes:
        one = type(stage)((node_id,))
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            executor.run_stage(one, values, parallel=False)
            times.append(time.perf_counter() - started)
        costs.append(float(np.median(times)) * 1e6)
    return float(np.mean(costs))


def bench_bundle(
    bundle: Path, *, dataset: str, quick: bool, progress: Progress = _no_progress
) -> GraphBenchReport:
    manifest = load_manifest(bundle)
    executor = load_graph(bundle / "graph" / "graph.toml", bundle_dir=bundle, manifest=manifest)
    try:
        return _measure(executor, bundle, dataset=dataset, quick=quick, progress=progress)
    finally:
        executor.close()


def _measure(
    executor: GraphExecutor, bundle: Path, *, dataset: str, quick: bool, progress: Progress
) -> GraphBenchReport:
    manifest = load_manifest(bundle)
    with np.load(verified_path(bundle, manifest.test_split)) as data:
        X = np.asarray(data["X"], dtype=np.float32)
        y = np.asarray(data["y"], dtype=np.int64)
    if quick:
        X, y = X[:QUICK_INPUTS], y[:QUICK_INPUTS]
    rounds = 20 if quick else 200
    progress("calibrating", 0, 1)
    timings = executor.calibrate(X[0], rounds=rounds)
    progress("calibrating", 1, 1)

    # Latency: threads and sequence alternately per input, a warm-up pass first.
    for x in X[:10]:
        executor.run(x, parallel=True)
        executor.run(x, parallel=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    past_gate: list[bool] = []
    for i, x in enumerate(X):
        for threads in (True, False):
            started = time.perf_counter()
            answer = executor.run(x, parallel=threads)
            times[threads].append(time.perf_counter() - started)
        past_gate.append(not answer.ended_early)
        progress("timing the graph both ways", i + 1, len(X))
    late = np.asarray(past_gate)

    def subset(values: list[float]) -> list[float]:
        return [v for v, keep in zip(values, late, strict=True) if keep] or [0.0]

    stages = [
        StageCost(
            nodes=list(t.nodes),
            sequential_us=t.sequential_us,
            parallel_us=t.parallel_us,
            node_us=_node_us(executor, t.nodes, X[0], rounds),
            chosen="parallel" if executor.stage_parallel(i) else "sequential",
        )
        for i, t in timings.items()
    ]

    policies, ended_early = _policies(executor, bundle, X, y, progress)
    progress("synthetic widths: where threads pay", 0, 1)
    widths = QUICK_WIDTHS if quick else WIDTHS
    synthetic = crossover(widths, rounds=rounds)
    progress("synthetic widths: where threads pay", 1, 1)
    return GraphBenchReport(
        dataset=dataset,
        model_id=manifest.model_id,
        graph=executor.graph.name,
        inputs=len(X),
        quick=quick,
        latency_all=_latency(times[True], times[False]),
        latency_past_gate=_latency(subset(times[True]), subset(times[False])),
        stages=stages,
        ended_early=ended_early,
        policies=policies,
        crossover=synthetic,
        note=(
            "one process, CPU execution provider, one intra-op thread per session; the hub is "
            "the bundle's hub model in process (no network), as in the cascade bench"
        ),
    )


def _policies(
    executor: GraphExecutor,
    bundle: Path,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    progress: Progress,
) -> tuple[list[Policy], float]:
    """Accuracy and escalation of the cascade and of the graph (the same threshold and hub),
    and the share of graphs that ended at the gate."""
    manifest = load_manifest(bundle)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    providers = ["CPUExecutionProvider"]

    def session(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    encoder = session(verified_path(bundle, manifest.encoder))
    head = session(verified_path(bundle, manifest.head))
    hub = session(verified_path(bundle, manifest.hub))
    threshold = manifest.router.threshold
    embedding = np.asarray(encoder.run([EMBEDDING], {ENCODER_INPUT: X})[0], dtype=np.float32)
    wire = embedding.astype(np.float16).astype(np.float32)
    edge = np.asarray(head.run([PROBABILITIES], {EMBEDDING: embedding})[0])
    hub_p = np.asarray(hub.run([PROBABILITIES], {EMBEDDING: wire})[0])
    escalate = edge.max(axis=1) < threshold
    cascade = np.where(escalate, hub_p.argmax(axis=1), edge.argmax(axis=1))

    async def to_hub(node: Node, probabilities: F32, emb: F32, features: F32) -> Routed:
        if float(probabilities.max()) >= threshold:
            return Routed(probabilities, "local", "confident")
        rounded = emb.reshape(1, -1).astype(np.float16).astype(np.float32)
        (p,) = hub.run([PROBABILITIES], {EMBEDDING: rounded})
        return Routed(np.asarray(p, dtype=np.float32).reshape(-1), "hub", "uncertain")

    async def graph_answers() -> list[tuple[int, bool, bool]]:
        out = []
        for x in X:
            answer = await executor.execute(x, route=to_hub)
            out.append((answer.label, answer.escalated, answer.ended_early))
        return out

    progress("graph with the hub", 0, 1)
    routed = asyncio.run(graph_answers())
    progress("graph with the hub", 1, 1)
    local_only = np.asarray([executor.run(x).label for x in X])
    graph_labels = np.asarray([r[0] for r in routed])
    graph_escalated = np.asarray([r[1] for r in routed])
    early = np.asarray([r[2] for r in routed])

    def acc(labels: npt.NDArray[np.int64]) -> float:
        return float(np.mean(labels == y))

    policies = [
        Policy(name="edge only (head)", accuracy=acc(edge.argmax(axis=1)), escalation_rate=0.0),
        Policy(name="hub only", accuracy=acc(hub_p.argmax(axis=1)), escalation_rate=1.0),
        Policy(
            name="cascade (head, then hub)",
            accuracy=acc(cascade),
            escalation_rate=float(escalate.mean()),
        ),
        Policy(
            name="graph, no hub (gate, then specialists)",
            accuracy=acc(local_only),
            escalation_rate=0.0,
        ),
        Policy(
            name="graph (gate, specialists, then hub)",
            accuracy=acc(graph_labels),
            escalation_rate=float(graph_escalated.mean()),
        ),
    ]
    return policies, float(early.mean())


def run_graph_bench(
    dataset: str,
    *,
    seed: int = 0,
    quick: bool = False,
    models: Path | None = None,
    progress: Progress = _no_progress,
) -> GraphBenchReport:
    """Build the bundle (unless `models`) and its graph, then measure."""
    from escalade.modelbuild import build_bundle
    from escalade.modelbuild.graph_heads import build_graph

    with tempfile.TemporaryDirectory(prefix="escalade-graph-") as tmp:
        bundle = models if models is not None else Path(tmp) / "bundle"
        if models is None:
            build_bundle(
                dataset,
                bundle,
                seed=seed,
                max_train=QUICK_TRAIN if quick else None,
                on_step=progress,
            )
        if not (bundle / "graph" / "graph.toml").exists():
            progress("training the graph's gate and specialists", 0, 1)
            build_graph(bundle)
            progress("training the graph's gate and specialists", 1, 1)
        return bench_bundle(bundle, dataset=dataset, quick=quick, progress=progress)
