"""Running a graph: ONNX Runtime sessions per model, stages in threads or in sequence, routed
nodes decided between stages, early exit at a confident gate.

One thread owns the run. A stage run in parallel hands each worker thread only its node's
input arrays and takes back its output array; the values of the run, the routing and every
counter live on the calling thread (the event loop in the agent). The calling thread runs one
node of the stage itself, so a stage of k branches costs k - 1 hand-offs.

Parallel is a measured choice ("auto"): the digits nodes cost ~10-30 µs each while handing a
node to a thread and back costs several times that, so threads can make a stage slower.
`calibrate` times every multi-node stage both ways on a real input and keeps, per stage,
whichever was faster (`StageTiming`); "always" and "never" in the spec skip the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.graphs.errors import GraphErrorCode, GraphSpecError
from edge_agent.graphs.plan import Plan, Stage, plan
from edge_agent.graphs.spec import ENCODER, HEAD, INPUT, Graph, Node, Port
from escalade_protocol.artifacts import (
    EMBEDDING,
    ENCODER_INPUT,
    ArtifactFile,
    BundleError,
    ModelManifest,
    verified_path,
)

F32 = npt.NDArray[np.float32]
NodeRunner = Callable[[F32], F32]
Where = Literal["local", "hub"]


@dataclass(frozen=True, slots=True)
class Routed:
    """What the router made of a routed node: its probabilities, where they came from, why."""

    probabilities: F32
    where: Where
    reason: str


# (node, its local probabilities, the embedding the hub would get, the graph's input) -> Routed
RouteFn = Callable[[Node, F32, F32, F32], Awaitable[Routed]]


@dataclass(frozen=True, slots=True)
class NodeRun:
    node: str
    where: Where
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    probabilities: F32  # over every class of the bundle
    label: int
    confidence: float
    ended_early: bool
    exit_node: str | None
    runs: tuple[NodeRun, ...]  # in the order they ran

    @property
    def escalated(self) -> bool:
        return any(r.where == "hub" for r in self.runs)


@dataclass(frozen=True, slots=True)
class StageTiming:
    nodes: tuple[str, ...]
    sequential_us: float
    parallel_us: float

    @property
    def parallel(self) -> bool:
        return self.parallel_us < self.sequential_us


def _full(port: Port, probabilities: F32, num_classes: int) -> F32:
    out = np.zeros(num_classes, dtype=np.float32)
    out[list(port.classes)] = probabilities.reshape(-1)
    return out


def _mixture(gate: F32, experts: Sequence[tuple[Port, F32]], num_classes: int) -> F32:
    """sum over groups g of p(g) * p(class | g): the gate weighs each specialist's answer."""
    out = np.zeros(num_classes, dtype=np.float32)
    for weight, (port, probs) in zip(gate.reshape(-1), experts, strict=True):
        out[list(port.classes)] += weight * probs.reshape(-1)
    return out.reshape(1, -1)


def model_paths(
    graph: Graph, bundle_dir: Path, manifest: ModelManifest, spec_dir: Path
) -> dict[str, Path]:
    """Every model the graph runs, each file checked against its SHA-256 (the bundle's against
    the manifest, the graph's extra ONNX files against the spec)."""
    paths: dict[str, Path] = {}
    try:
        paths[ENCODER] = verified_path(bundle_dir, manifest.encoder)
        paths[HEAD] = verified_path(bundle_dir, manifest.head)
        for name, model in graph.models.items():
            artifact = ArtifactFile(path=model.path, sha256=model.sha256)
            paths[name] = verified_path(spec_dir, artifact)
    except BundleError as exc:
        raise GraphSpecError(GraphErrorCode.DIGEST_MISMATCH, f"graph {graph.name}: {exc}") from None
    return paths


class GraphExecutor:
    def __init__(
        self,
        graph: Graph,
        paths: Mapping[str, Path],
        *,
        providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
        instrument: Callable[[str, NodeRunner], NodeRunner] | None = None,
    ) -> None:
        """`instrument(node id, runner)` may wrap a node's runner (tests: a barrier)."""
        self.graph = graph
        self.plan: Plan = plan(graph)
        options = ort.SessionOptions()
        # One thread per session: branches, not intra-op threads, are what may run at once.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        sessions = {
            name: ort.InferenceSession(str(paths[name]), sess_options=options, providers=providers)
            for name in {n.model for n in graph.nodes.values() if n.model is not None}
        }
        self._runners: dict[str, NodeRunner] = {}
        for node in graph.nodes.values():
            if node.model is None:
                continue
            runner = self._runner(node, sessions[node.model])
            self._runners[node.id] = instrument(node.id, runner) if instrument else runner
        width = max((len(s.nodes) for s in self.plan.stages), default=1)
        self._pool = ThreadPoolExecutor(max_workers=max(1, width - 1), thread_name_prefix="graph")
        fixed = graph.parallel != "auto"
        self._parallel: dict[int, bool] = {
            i: graph.parallel == "always" if fixed else False
            for i, s in enumerate(self.plan.stages)
            if len(s.nodes) > 1
        }
        self.timings: dict[int, StageTiming] = {}

    def _runner(self, node: Node, session: ort.InferenceSession) -> NodeRunner:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        takes = ENCODER_INPUT if node.model == ENCODER else EMBEDDING
        width = len(node.gives.classes) or len(node.gives.groups) or None
        declared = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        if len(inputs) != 1 or inputs[0].name != takes or len(outputs) != 1:
            raise GraphSpecError(
                GraphErrorCode.BAD_MODEL,
                f"model {node.model}: needs one input {takes!r} and one output",
            )
        if width is not None and isinstance(declared, int) and declared != width:
            raise GraphSpecError(
                GraphErrorCode.BAD_MODEL,
                f"model {node.model}: gives {declared} values, the spec says {width}",
            )
        name, out = inputs[0].name, outputs[0].name

        def run(x: F32) -> F32:
            (y,) = session.run([out], {name: x})
            return np.asarray(y, dtype=np.float32)

        return run

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- running ---------------------------------------------------------------------------

    def _inputs(self, node: Node, values: Mapping[str, F32]) -> tuple[F32, ...]:
        return tuple(values[d] for d in node.inputs)

    def _node(self, node: Node, inputs: tuple[F32, ...]) -> F32:
        if node.model is not None:
            return self._runners[node.id](inputs[0])
        gate, *experts = inputs
        ports = [self.graph.nodes[e].gives for e in node.inputs[1:]]
        return _mixture(gate, list(zip(ports, experts, strict=True)), self.graph.num_classes)

    def run_stage(
        self, stage: Stage, values: Mapping[str, F32], *, parallel: bool
    ) -> dict[str, F32]:
        """The stage's outputs; in parallel the workers get only their node's inputs."""
        nodes = [self.graph.nodes[n] for n in stage.nodes]
        jobs = [(node, self._inputs(node, values)) for node in nodes]
        if not parallel or len(jobs) == 1:
            return {node.id: self._node(node, args) for node, args in jobs}
        futures = [(node.id, self._pool.submit(self._node, node, args)) for node, args in jobs[1:]]
        first, args = jobs[0]
        out = {first.id: self._node(first, args)}
        for node_id, future in futures:
            out[node_id] = future.result()
        return out

    def stage_parallel(self, index: int) -> bool:
        return self._parallel.get(index, False)

    def _walk(
        self, x: F32, *, routed: bool, parallel: bool | None, early_exit: bool
    ) -> Generator[tuple[Node, F32, F32], Routed | None, GraphAnswer]:
        """The run as a generator: it yields (node, its probabilities, the embedding) for each
        routed node and takes back the router's `Routed` (None: stays local)."""
        values: dict[str, F32] = {INPUT: x}
        runs: list[NodeRun] = []
        num_classes = self.graph.num_classes
        for index, stage in enumerate(self.plan.stages):
            threads = self.stage_parallel(index) if parallel is None else parallel
            outputs = self.run_stage(stage, values, parallel=threads)
            for node_id in stage.nodes:
                node = self.graph.nodes[node_id]
                where: Where = "local"
                reason = ""
                if routed and node.route == "auto" and node.embedding_from:
                    decided = yield node, outputs[node_id].reshape(-1), values[node.embedding_from]
                    if decided is not None:
                        outputs[node_id] = decided.probabilities.reshape(1, -1).astype(np.float32)
                        where, reason = decided.where, decided.reason
                runs.append(NodeRun(node_id, where, reason))
            values.update(outputs)
            for gate in stage.exits if early_exit else ():
                node = self.graph.nodes[gate]
                probs = values[gate].reshape(-1)
                assert node.exit_threshold is not None
                if float(probs.max()) >= node.exit_threshold:
                    return self._answer(_full(node.gives, probs, num_classes), runs, exit_node=gate)
        out = self.graph.nodes[self.graph.output]
        return self._answer(
            _full(out.gives, values[out.id].reshape(-1), num_classes), runs, exit_node=None
        )

    def run(
        self, features: F32, *, parallel: bool | None = None, early_exit: bool = True
    ) -> GraphAnswer:
        """One input (shape (input_dim,)) through the plan, every node local. `parallel`
        overrides the calibrated choice for every stage."""
        x = np.ascontiguousarray(features, dtype=np.float32).reshape(1, -1)
        walk = self._walk(x, routed=False, parallel=parallel, early_exit=early_exit)
        try:
            next(walk)
        except StopIteration as stop:
            answer: GraphAnswer = stop.value
            return answer
        raise AssertionError("an unrouted run asked for a route")

    async def execute(
        self,
        features: F32,
        *,
        route: RouteFn,
        parallel: bool | None = None,
        early_exit: bool = True,
    ) -> GraphAnswer:
        """`run`, with `route` deciding each routed node (it may await the hub)."""
        x = np.ascontiguousarray(features, dtype=np.float32).reshape(1, -1)
        walk = self._walk(x, routed=True, parallel=parallel, early_exit=early_exit)
        try:
            node, probabilities, embedding = next(walk)
            while True:
                decided = await route(node, probabilities, embedding, x)
                node, probabilities, embedding = walk.send(decided)
        except StopIteration as stop:
            answer: GraphAnswer = stop.value
            return answer

    @staticmethod
    def _answer(probabilities: F32, runs: list[NodeRun], *, exit_node: str | None) -> GraphAnswer:
        label = int(np.argmax(probabilities))
        return GraphAnswer(
            probabilities=probabilities,
            label=label,
            confidence=float(probabilities[label]),
            ended_early=exit_node is not None,
            exit_node=exit_node,
            runs=tuple(runs),
        )

    # --- calibration -----------------------------------------------------------------------

    def calibrate(self, features: F32, *, rounds: int = 200) -> dict[int, StageTiming]:
        """Time each multi-node stage in sequence and in threads on `features` (interleaved,
        medians) and, in "auto" mode, keep the faster way for each stage."""
        x = np.ascontiguousarray(features, dtype=np.float32).reshape(1, -1)
        values: dict[str, F32] = {INPUT: x}
        for index, stage in enumerate(self.plan.stages):
            if len(stage.nodes) > 1:
                times: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(rounds):
                    for threads in (False, True):
                        started = time.perf_counter()
                        self.run_stage(stage, values, parallel=threads)
                        times[threads].append(time.perf_counter() - started)
                timing = StageTiming(
                    nodes=stage.nodes,
                    sequential_us=float(np.median(times[False]) * 1e6),
                    parallel_us=float(np.median(times[True]) * 1e6),
                )
                self.timings[index] = timing
                if self.graph.parallel == "auto":
                    self._parallel[index] = timing.parallel
            values.update(self.run_stage(stage, values, parallel=False))
        return self.timings
