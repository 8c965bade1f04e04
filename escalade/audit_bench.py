"""`escalade bench audits`: how fast audits by re-encoding catch attackers no statistic sees.

For each attack that stays in the clean distribution (gradient, mimicry, class offset), each way
an attacker can answer an audit, and each audit rate, `devices` attacker devices send up to
`messages` forged embeddings each. Every message is drawn for audit by the hub's own sampler
(`AuditSampler`, a keyed PRF over a fresh request digest); an audited message is judged by the
hub's own code — the reveal sealed and opened (`provenance`), the commitment recomputed, the
input re-encoded by the bundle's encoder (`Reencoder`, input domain included) and compared
(`judge_reveal`) — so the figures are what the hub would decide, without HTTP around it.

How an attacker answers an audit:
- ``honest_input``: reveals the real input behind the message: it re-encodes to the clean
  embedding, not the forged one (encoding_mismatch).
- ``refuse``: reveals nothing; quarantined when the deadline passes, `deadline_messages` later.
- ``crafted_input``: reveals an input made to encode to the forged embedding (box-constrained
  least squares through the encoder, linearised: exact for the linear demo encoders). It passes
  re-encoding when the forged embedding has a preimage in the input domain: audits prove that an
  embedding encodes *some* valid input the device committed to, never that the input is natural.

Honest devices reveal through another execution setting of the encoder (no graph optimisation,
two threads) after the float16 wire trip: they must never be quarantined.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from scipy.optimize import lsq_linear

from cloud_hub.audits import AuditPolicy, AuditSampler, judge_reveal
from cloud_hub.audits.reencoder import Reencoder
from cloud_hub.poisoning import EmbeddingChecker
from cloud_hub.poisoning.reference import ReferenceStats
from escalade.poisoning_bench import attacks as atk
from escalade.poisoning_bench.models import BundleModels, wire
from escalade_protocol.artifacts import EMBEDDING, ENCODER_INPUT, load_manifest, verified_path
from escalade_protocol.keys import X25519PrivateKey
from escalade_protocol.provenance import Revealed, open_reveal, seal_reveal
from escalade_protocol.tensor import Tensor

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
RATES = (0.005, 0.01, 0.02, 0.05)
STRATEGIES = ("honest_input", "refuse", "crafted_input")
ATTACKS: tuple[tuple[str, str, atk.Attack], ...] = (
    ("gradient", "l2_1", atk.gradient(1.0)),
    ("mimicry", "l2_2", atk.mimicry(2.0)),
    ("class_offset", "alpha_0.6", atk.class_offset(0.6)),
)
# The target: quarantined with proof within 300 messages at a 1% audit rate.
TARGET_MESSAGES, TARGET_RATE = 300, 0.01


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditAttackRow(_Model):
    attack: str
    strength: str
    strategy: str
    audit_rate: float
    devices: int
    # Median over attacker devices; None: most were never quarantined within the run.
    messages_to_quarantine: float | None
    quarantined_share: float
    # Forged answers (hub's answer differs from the clean one) before quarantine, per attacker.
    flipped_before_quarantine: float
    # Share of the forged messages whose crafted reveal would pass (crafted_input only).
    reveal_passes: float | None = None


class HonestRow(_Model):
    audit_rate: float
    devices: int
    messages: int
    audits: int
    false_quarantines: int
    worst_distance: float


class AuditBenchReport(_Model):
    dataset: str
    tolerance: float
    deadline_messages: int
    attacks: list[AuditAttackRow]
    honest: list[HonestRow]
    # Hub cost of one audited message: open the reveal, recompute, re-encode, compare.
    audit_cost_us: float
    seconds: float


@dataclass(frozen=True)
class _Forged:
    """One attack on every test input: the forged embeddings, which of them flip the hub's
    answer unseen, and how often a crafted reveal for one passes the audit."""

    embeddings: F32
    flipped: NDArray[np.bool_]
    crafted_passes: float


def _device_encoder(bundle_dir: Path) -> ort.InferenceSession:
    """The encoder as a differently configured device runs it (the honest variance)."""
    manifest = load_manifest(bundle_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        str(verified_path(bundle_dir, manifest.encoder)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )


def _linearised(reencoder: Reencoder, dim: int) -> tuple[F64, F64]:
    """The encoder as W x + b, read off its outputs (exact for the linear demo encoders)."""

    def encode(features: F32) -> F64:
        out = reencoder.embedding(Tensor.from_numpy(features, "float32"))
        assert out is not None
        return np.asarray(out, np.float64)

    bias = encode(np.zeros(dim, np.float32))
    unit = np.eye(dim, dtype=np.float32)
    return np.stack([encode(unit[i]) - bias for i in range(dim)], axis=1), bias


def _craft(w: F64, b: F64, targets: F32, low: float, high: float) -> F32:
    out = np.empty((len(targets), w.shape[1]), np.float32)
    for i, target in enumerate(targets):
        out[i] = lsq_linear(w, target.astype(np.float64) - b, bounds=(low, high)).x
    return out


class _Judge:
    """The hub's audit of one message, with the hub's own pieces."""

    def __init__(self, bundle_dir: Path, wire_dtype: str, tolerance: float) -> None:
        self.reencoder = Reencoder(bundle_dir)
        self.key = X25519PrivateKey.generate()
        self.wire_dtype = wire_dtype
        self.tolerance = tolerance

    def reveal(self, sent: F32, revealed_input: F32) -> tuple[bytes, bytes, bytes]:
        """The device's side: commit at send time, seal the reveal when audited."""
        digest = os.urandom(32)
        revealed = Revealed(os.urandom(32), Tensor.from_numpy(revealed_input, "float32"))
        committed = revealed.commitment(Tensor.from_numpy(sent, self.wire_dtype).encode())
        sealed = seal_reveal(revealed, self.key.public_key(), request_digest=digest)
        return digest, committed, sealed

    def judge(
        self, sent: F32, digest: bytes, committed: bytes, sealed: bytes
    ) -> tuple[bool, float]:
        """The hub's side, as `Auditor` does it: open, recompute, re-encode, compare."""
        opened = open_reveal(sealed, self.key, request_digest=digest)
        verdict = judge_reveal(
            committed=committed,
            recomputed=opened.commitment(Tensor.from_numpy(sent, self.wire_dtype).encode()),
            sent=sent,
            reencoded=self.reencoder.embedding(opened.input),
            tolerance=self.tolerance,
        )
        return verdict.passed, math.inf if verdict.distance is None else verdict.distance

    def passes(self, sent: F32, revealed_input: F32) -> tuple[bool, float]:
        return self.judge(sent, *self.reveal(sent, revealed_input))


@dataclass
class _Population:
    """Simulated devices: each message drawn for audit by the hub's sampler, each audited one
    judged by the hub's code."""

    judge: _Judge
    sampler: AuditSampler
    x: F32
    devices: int
    messages: int
    deadline_messages: int
    rng: np.random.Generator

    def attackers(
        self, attack: tuple[str, str], strategy: str, rate: float, forged: _Forged
    ) -> AuditAttackRow:
        to_quarantine: list[float] = []
        harm: list[int] = []
        for _ in range(self.devices):
            inputs = self.rng.integers(0, len(self.x), size=self.messages)
            caught_at = self._caught_at(strategy, rate, forged, inputs)
            stop = self.messages if caught_at is None else min(caught_at, self.messages)
            within = caught_at is not None and caught_at <= self.messages
            to_quarantine.append(float(caught_at) if within and caught_at else math.inf)
            harm.append(int(forged.flipped[inputs[:stop]].sum()))
        median = float(np.median(to_quarantine))
        return AuditAttackRow(
            attack=attack[0],
            strength=attack[1],
            strategy=strategy,
            audit_rate=rate,
            devices=self.devices,
            messages_to_quarantine=median if math.isfinite(median) else None,
            quarantined_share=round(float(np.isfinite(to_quarantine).mean()), 4),
            flipped_before_quarantine=round(float(np.mean(harm)), 1),
            reveal_passes=round(forged.crafted_passes, 4) if strategy == "crafted_input" else None,
        )

    def _caught_at(
        self, strategy: str, rate: float, forged: _Forged, inputs: NDArray[np.int64]
    ) -> int | None:
        for i in range(1, self.messages + 1):
            if not self.sampler.selected(os.urandom(32), rate):
                continue
            k = int(inputs[i - 1])
            if strategy == "refuse":
                return i + self.deadline_messages
            if strategy == "honest_input":
                if not self.judge.passes(forged.embeddings[k], self.x[k])[0]:
                    return i
            # crafted: an audit passes as often as the crafted reveals judged for real did
            elif self.rng.random() >= forged.crafted_passes:
                return i
        return None

    def honest(self, rate: float, honest_wire: F32) -> HonestRow:
        audits = false_quarantines = 0
        worst = 0.0
        for _ in range(self.devices):
            caught = False
            for _ in range(self.messages):
                if not self.sampler.selected(os.urandom(32), rate):
                    continue
                k = int(self.rng.integers(0, len(self.x)))
                ok, distance = self.judge.passes(honest_wire[k], self.x[k])
                audits += 1
                worst = max(worst, distance)
                caught = caught or not ok
            false_quarantines += caught
        return HonestRow(
            audit_rate=rate,
            devices=self.devices,
            messages=self.messages,
            audits=audits,
            false_quarantines=false_quarantines,
            worst_distance=round(worst, 6),
        )


def run_audit_bench(
    bundle_dir: Path,
    *,
    dataset: str = "digits",
    devices: int = 200,
    messages: int = 1000,
    honest_devices: int = 200,
    deadline_messages: int = 120,
    seed: int = 0,
) -> AuditBenchReport:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    models = BundleModels(bundle_dir)
    manifest = models.manifest
    stats = ReferenceStats.load(models.calibration)
    checker = EmbeddingChecker(stats)
    tolerance = AuditPolicy().tolerance
    judge = _Judge(bundle_dir, manifest.wire_dtype, tolerance)
    domain = judge.reencoder.domain
    low, high = (domain.low, domain.high) if domain is not None else (-np.inf, np.inf)
    w, b = _linearised(judge.reencoder, manifest.input_dim)
    x = models.x_test
    clean = models.embed(x)
    clean_answer = models.predict(clean)
    ctx = atk.Context(stats, models, rng)
    population = _Population(judge, AuditSampler(), x, devices, messages, deadline_messages, rng)
    rows: list[AuditAttackRow] = []
    for name, strength, attack in ATTACKS:
        embeddings = wire(attack(clean.astype(np.float64), clean_answer, ctx))
        answer = models.predict(embeddings)
        flipped = (answer != clean_answer) & checker.check_batch(embeddings, answer).passed
        sample = rng.choice(len(x), size=min(100, len(x)), replace=False)
        crafted = _craft(w, b, embeddings[sample], low, high)
        passes = [judge.passes(embeddings[i], c)[0] for i, c in zip(sample, crafted, strict=True)]
        forged = _Forged(embeddings, flipped, float(np.mean(passes)))
        for rate in RATES:
            rows.extend(
                population.attackers((name, strength), strategy, rate, forged)
                for strategy in STRATEGIES
            )

    (device_embeddings,) = _device_encoder(bundle_dir).run([EMBEDDING], {ENCODER_INPUT: x})
    honest_wire = wire(device_embeddings)
    honest_population = _Population(
        judge, population.sampler, x, honest_devices, messages, deadline_messages, rng
    )
    honest = [honest_population.honest(rate, honest_wire) for rate in RATES]

    timings = []
    for i in range(200):
        sent = honest_wire[i % len(x)]
        prepared = judge.reveal(sent, x[i % len(x)])
        t = time.perf_counter_ns()
        judge.judge(sent, *prepared)
        timings.append(time.perf_counter_ns() - t)
    return AuditBenchReport(
        dataset=dataset,
        tolerance=tolerance,
        deadline_messages=deadline_messages,
        attacks=rows,
        honest=honest,
        audit_cost_us=round(float(np.median(timings)) / 1e3, 1),
        seconds=round(time.perf_counter() - started, 1),
    )


def markdown(report: AuditBenchReport) -> str:
    lines = [
        f"Audits by re-encoding ({report.dataset}; tolerance {report.tolerance}, deadline "
        f"{report.deadline_messages} messages, hub cost {report.audit_cost_us} us per audit)",
        "",
        "| attack | reveal | audit rate | messages to quarantine (median) | quarantined "
        "| flipped before quarantine | crafted reveal passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.attacks:
        m = "never" if r.messages_to_quarantine is None else f"{r.messages_to_quarantine:g}"
        passes = "" if r.reveal_passes is None else f"{r.reveal_passes:.0%}"
        lines.append(
            f"| {r.attack} {r.strength} | {r.strategy} | {r.audit_rate:.1%} | {m} | "
            f"{r.quarantined_share:.0%} | {r.flipped_before_quarantine:g} | {passes} |"
        )
    lines += ["", "| honest: audit rate | devices x messages | audits | false quarantines "
              "| worst distance |", "|---|---|---|---|---|"]  # fmt: skip
    for h in report.honest:
        lines.append(
            f"| {h.audit_rate:.1%} | {h.devices} x {h.messages} | {h.audits} | "
            f"{h.false_quarantines} | {h.worst_distance:.2g} |"
        )
    return "\n".join(lines)
