"""The simulated fleet: days of traffic through edge heads, the hub, its checks and the
distillation set; and the crafted, label-flipping embeddings a poisoned minority sends."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud_hub.distill import DistillSample, DistillSet
from cloud_hub.poisoning import EmbeddingChecker
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.layers import wire_round
from escalade.modelbuild.train import F32, I64

# A poisoner blends a clean embedding toward another class's centroid by the smallest of these
# weights that makes the hub answer that class: the most plausible label-flipping vector.
BLENDS = np.linspace(0.05, 1.0, 20)


@dataclass(frozen=True)
class Fleet:
    devices: int
    poisoners: int
    requests: int  # per device per round
    seed: int

    def is_poisoner(self, device: int) -> bool:
        return device < self.poisoners


def flipped(
    embedding: F32, label: int, class_means: F32, runner: OnnxRunner
) -> tuple[F32, int] | None:
    """`embedding` (of class `label`) pulled toward class label + 1 until the hub says so."""
    target = (label + 1) % len(class_means)
    blends = np.stack([(1 - a) * embedding + a * class_means[target] for a in BLENDS])
    wire = wire_round(blends.astype(np.float32))
    answers = runner.hub_probabilities(wire).argmax(axis=1)
    hits = np.flatnonzero(answers == target)
    return None if not hits.size else (wire[hits[0]], target)


def run_round(
    fleet: Fleet,
    round_no: int,
    *,
    runner: OnnxRunner,
    threshold: float,
    traffic: tuple[F32, I64],
    checker: EmbeddingChecker,
    dataset: DistillSet,
    class_means: F32,
) -> None:
    """One simulated day: every device answers `requests` inputs, escalating below
    `threshold`; the hub's checked answers feed `dataset`. Poisoners escalate everything."""
    rng = np.random.default_rng((fleet.seed, round_no))
    x_pool, y_pool = traffic
    for device in range(fleet.devices):
        idx = rng.integers(0, len(x_pool), fleet.requests)
        embedding = runner.embed(x_pool[idx])
        device_id = f"device-{device:04d}"
        if fleet.is_poisoner(device):
            for e, label in zip(embedding, y_pool[idx], strict=True):
                crafted = flipped(e, int(label), class_means, runner)
                if crafted is None:
                    continue
                vector, claimed = crafted
                check = checker.check(vector, claimed)
                dataset.offer(
                    DistillSample(device_id, vector, claimed),
                    device_active=True,
                    check_passed=check.passed,
                )
            continue
        edge = runner.edge_probabilities(embedding)
        escalated = edge.max(axis=1) < threshold
        wire = wire_round(embedding[escalated])
        if not len(wire):
            continue
        hub_labels = runner.hub_probabilities(wire).argmax(axis=1)
        for vector, answer in zip(wire, hub_labels, strict=True):
            check = checker.check(vector, int(answer))
            dataset.offer(
                DistillSample(device_id, vector, int(answer)),
                device_active=True,
                check_passed=check.passed,
            )
