"""Where threads start to pay: the demo graph's shape (a group gate and one expert per group,
side by side) with random-weight MLP nodes of growing width, timed in sequence and in threads.

Timing only: the weights are random, the answers meaningless. Each node is
embedding -> width -> width -> outputs, so its cost grows with width squared.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.graphs import GraphExecutor, parse_spec, validate
from edge_agent.graphs.executor import F32
from escalade.graph_bench.report import Crossover
from escalade.modelbuild.layers import Classifier, dense
from escalade.modelbuild.onnx_export import classifier_model, encoder_model, serialize
from escalade.modelbuild.train import Encoder

GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7), (8, 9))
INPUT_DIM, EMBEDDING_DIM = 64, 32


def _mlp(rng: np.random.Generator, width: int, outputs: int) -> Classifier:
    sizes = [EMBEDDING_DIM, width, width, outputs]
    return Classifier(
        tuple(
            dense(
                rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
                np.zeros(b, dtype=np.float32),
            )
            for a, b in itertools.pairwise(sizes)
        )
    )


def _executor(folder: Path, width: int, seed: int) -> GraphExecutor:
    rng = np.random.default_rng(seed)
    encoder = Encoder(
        layers=(dense(rng.normal(0, 0.1, (INPUT_DIM, EMBEDDING_DIM)), np.zeros(EMBEDDING_DIM)),)
    )
    paths = {"encoder": folder / "encoder.onnx"}
    paths["encoder"].write_bytes(serialize(encoder_model(encoder, "synthetic-encoder")))
    models = {"groups": _mlp(rng, width, len(GROUPS))}
    models |= {f"e{i}": _mlp(rng, width, len(g)) for i, g in enumerate(GROUPS)}
    lines = ['name = "synthetic"', 'output = "mix"']
    for name, model in models.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(serialize(classifier_model(model, name, "random weights")))
        lines += [f"[models.{name}]", f'path = "{name}.onnx"', f'sha256 = "{"0" * 64}"']
        if name == "groups":
            lines += ['gives = "groups"', f"groups = {[list(g) for g in GROUPS]}"]
        else:
            lines += ['gives = "probabilities"', f"classes = {list(GROUPS[int(name[1:])])}"]
    lines += ["[[nodes]]", 'id = "embed"', 'model = "encoder"', 'inputs = ["input"]']
    for name in models:
        lines += ["[[nodes]]", f'id = "{name}"', f'model = "{name}"', 'inputs = ["embed"]']
    experts = ", ".join(f'"e{i}"' for i in range(len(GROUPS)))
    lines += ["[[nodes]]", 'id = "mix"', 'gate = "groups"', f"experts = [{experts}]"]
    graph = validate(parse_spec("\n".join(lines)), num_classes=10)
    return GraphExecutor(graph, paths)


def crossover(widths: tuple[int, ...], *, rounds: int, seed: int = 0) -> list[Crossover]:
    out = []
    x: F32 = np.random.default_rng(seed).normal(size=INPUT_DIM).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="escalade-graph-synthetic-") as tmp:
        for width in widths:
            folder = Path(tmp) / str(width)
            folder.mkdir()
            executor = _executor(folder, width, seed)
            try:
                timings = executor.calibrate(x, rounds=rounds)
                (stage,) = timings.values()
                values = {"input": x.reshape(1, -1)}
                values.update(executor.run_stage(executor.plan.stages[0], values, parallel=False))
                node = executor.graph.nodes["e0"]
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    executor.run_stage(
                        type(executor.plan.stages[0])((node.id,)), values, parallel=False
                    )
                    times.append(time.perf_counter() - started)
                out.append(
                    Crossover(
                        width=width,
                        node_us=float(np.median(times)) * 1e6,
                        sequential_us=stage.sequential_us,
                        parallel_us=stage.parallel_us,
                        ratio=stage.parallel_us / stage.sequential_us,
                    )
                )
            finally:
                executor.close()
    return out
