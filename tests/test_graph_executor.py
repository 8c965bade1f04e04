"""The graph executor on the demo graph's real ONNX models: branches of a parallel stage really
run at once (a barrier only all of them together can pass), a confident gate ends the graph
before any specialist runs, a routed node's answer is replaced by the hub's, and the
calibration keeps the faster way per stage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from graph_bundle import graph_bundle

from edge_agent.graphs import GraphExecutor, Node, Routed, load_graph
from edge_agent.graphs.executor import F32, NodeRunner, model_paths
from edge_agent.graphs.spec import parse_spec, validate
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    load_manifest,
    verified_path,
)

BRANCHES = ("groups", "group0", "group1", "group2")


@pytest.fixture(scope="module")
def built(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graph_bundle(bundle_dir, tmp_path_factory.mktemp("graph-exec") / "bundle")


@pytest.fixture(scope="module")
def inputs(built: Path) -> npt.NDArray[np.float32]:
    with np.load(built / "test.npz") as data:
        return np.asarray(data["X"], dtype=np.float32)


def executor(
    built: Path,
    *,
    parallel: str = "auto",
    instrument: Callable[[str, NodeRunner], NodeRunner] | None = None,
) -> GraphExecutor:
    manifest = load_manifest(built)
    spec = built / "graph" / "graph.toml"
    text = spec.read_text().replace('parallel = "auto"', f'parallel = "{parallel}"')
    graph = validate(parse_spec(text), num_classes=manifest.num_classes)
    paths = model_paths(graph, built, manifest, spec.parent)
    return GraphExecutor(graph, paths, instrument=instrument)


def unsure(built: Path, inputs: npt.NDArray[np.float32]) -> F32:
    """A test input the gate is not confident about (so the graph runs to the end)."""
    manifest = load_manifest(built)
    plain = load_graph(built / "graph" / "graph.toml", bundle_dir=built, manifest=manifest)
    try:
        for x in inputs:
            if not plain.run(x).ended_early:
                return x
    finally:
        plain.close()
    raise AssertionError("every input ended at the gate")


def test_parallel_branches_really_overlap(built: Path, inputs: npt.NDArray[np.float32]) -> None:
    """Each branch waits at a barrier that opens only when all four wait at once: in sequence
    the first would time out (BrokenBarrierError); in threads they all pass, on 4 threads."""
    barrier = threading.Barrier(len(BRANCHES), timeout=30)
    threads: dict[str, str] = {}

    def instrument(node: str, run: NodeRunner) -> NodeRunner:
        if node not in BRANCHES:
            return run

        def waiting(x: F32) -> F32:
            threads[node] = threading.current_thread().name
            barrier.wait()
            return run(x)

        return waiting

    x = unsure(built, inputs)
    ex = executor(built, parallel="always", instrument=instrument)
    try:
        answer = ex.run(x)
    finally:
        ex.close()
    assert not answer.ended_early
    assert set(threads) == set(BRANCHES)
    assert len(set(threads.values())) == len(BRANCHES)
    assert threading.current_thread().name in threads.values()  # the caller runs one itself


def test_in_sequence_every_branch_runs_on_the_calling_thread(
    built: Path, inputs: npt.NDArray[np.float32]
) -> None:
    seen: list[str] = []

    def instrument(node: str, run: NodeRunner) -> NodeRunner:
        def recorded(x: F32) -> F32:
            seen.append(threading.current_thread().name)
            return run(x)

        return recorded

    ex = executor(built, parallel="never", instrument=instrument)
    try:
        ex.run(unsure(built, inputs))
    finally:
        ex.close()
    assert seen
    assert set(seen) == {threading.current_thread().name}


def test_a_confident_gate_ends_the_graph_before_any_specialist(
    built: Path, inputs: npt.NDArray[np.float32]
) -> None:
    ran: list[str] = []

    def instrument(node: str, run: NodeRunner) -> NodeRunner:
        def recorded(x: F32) -> F32:
            ran.append(node)
            return run(x)

        return recorded

    ex = executor(built, instrument=instrument)
    try:
        answers = [ex.run(x) for x in inputs[:60]]
    finally:
        ex.close()
    early = [a for a in answers if a.ended_early]
    late = [a for a in answers if not a.ended_early]
    assert early
    assert late
    assert all(
        a.exit_node == "gate" and [r.node for r in a.runs] == ["embed", "gate"] for a in early
    )
    assert all([r.node for r in a.runs][-1] == "mix" and a.exit_node is None for a in late)
    # The specialists ran exactly once per input that went past the gate.
    assert ran.count("group1") == len(late)
    threshold = ex.graph.nodes["gate"].exit_threshold
    assert threshold is not None
    assert all(a.confidence >= threshold for a in early)
    assert all(abs(float(a.probabilities.sum()) - 1.0) < 1e-4 for a in answers)


async def test_a_routed_node_takes_the_hubs_answer(
    built: Path, inputs: npt.NDArray[np.float32]
) -> None:
    """The route function gets the routed node's probabilities and the encoder's embedding;
    here it runs the bundle's hub model (real ONNX Runtime) and the answer is the hub's."""
    manifest = load_manifest(built)
    hub = ort.InferenceSession(
        str(verified_path(built, manifest.hub)), providers=["CPUExecutionProvider"]
    )
    asked: list[tuple[str, int]] = []

    async def to_hub(node: Node, probabilities: F32, embedding: F32, features: F32) -> Routed:
        asked.append((node.id, embedding.shape[-1]))
        (probs,) = hub.run([PROBABILITIES], {EMBEDDING: embedding.reshape(1, -1)})
        return Routed(np.asarray(probs, dtype=np.float32).reshape(-1), "hub", "forced_hub")

    x = unsure(built, inputs)
    ex = executor(built)
    try:
        answer = await ex.execute(x, route=to_hub)
        local = ex.run(x)
    finally:
        ex.close()
    assert asked == [("mix", manifest.embedding_dim)]
    assert answer.escalated
    assert not local.escalated
    assert [r.where for r in answer.runs if r.node == "mix"] == ["hub"]
    embedding = np.asarray(
        ort.InferenceSession(
            str(verified_path(built, manifest.encoder)), providers=["CPUExecutionProvider"]
        ).run([EMBEDDING], {"input": x.reshape(1, -1)})[0]
    )
    expected = hub.run([PROBABILITIES], {EMBEDDING: embedding})[0].reshape(-1)
    assert np.allclose(answer.probabilities, expected, atol=1e-6)


def test_calibration_measures_each_parallel_stage_and_keeps_the_faster_way(
    built: Path, inputs: npt.NDArray[np.float32]
) -> None:
    ex = executor(built)
    try:
        timings = ex.calibrate(inputs[0], rounds=20)
    finally:
        ex.close()
    (index,) = timings
    assert timings[index].nodes == BRANCHES
    assert timings[index].sequential_us > 0
    assert timings[index].parallel_us > 0
    assert ex.stage_parallel(index) is (timings[index].parallel_us < timings[index].sequential_us)
