"""`escalade bench audits`: how fast audits by re-encoding catch attackers no statistic sees.

For each attack that stays in the clean distribution (gradient, mimicry, class offset), each way
an attacker can answer an audit and each audit rate, `devices` attacker devices send up to
`messages` forged embeddings each; `escalade.poisoning_bench.audit_sim` draws and judges their
audits with the hub's own code, so the figures are what the hub would decide, without HTTP
around it. Audits prove that an embedding encodes *some* valid input the device committed to,
never that the input is natural: a crafted preimage passes.

Honest devices reveal through another execution setting of the encoder (no graph optimisation,
two threads) after the float16 wire trip: they must never be quarantined.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from cloud_hub.audits import AuditPolicy, AuditSampler
from cloud_hub.poisoning import EmbeddingChecker
from cloud_hub.poisoning.reference import ReferenceStats
from cloud_hub.poisoning.reputation import ReputationParams
from cloud_hub.store.policies import HubPolicy
from escalade.poisoning_bench import attacks as atk
from escalade.poisoning_bench import audit_sim as sim
from escalade.poisoning_bench.audit_sim import AuditedStream, Forged
from escalade.poisoning_bench.harm import HarmSim
from escalade.poisoning_bench.models import BundleModels, wire

F32 = NDArray[np.float32]
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


@dataclass
class _Population:
    """Simulated devices, each message drawn for audit and judged by the hub's code."""

    stream: AuditedStream
    devices: int
    messages: int

    def attackers(
        self, attack: tuple[str, str], strategy: str, rate: float, forged: Forged
    ) -> AuditAttackRow:
        sim = HarmSim(ReputationParams(), self.stream, self.devices, self.messages)
        harm = sim.attackers(None, forged, rate=rate, strategy=strategy)
        return AuditAttackRow(
            attack=attack[0],
            strength=attack[1],
            strategy=strategy,
            audit_rate=rate,
            devices=self.devices,
            messages_to_quarantine=harm.messages_to_quarantine,
            quarantined_share=harm.quarantined_share,
            flipped_before_quarantine=harm.flipped_before_quarantine,
            reveal_passes=round(forged.crafted_passes, 4) if strategy == "crafted_input" else None,
        )

    def honest(self, rate: float, honest_wire: F32) -> HonestRow:
        audits = false_quarantines = 0
        worst = 0.0
        x, rng = self.stream.x, self.stream.rng
        for _ in range(self.devices):
            ks = rng.integers(0, len(x), size=self.messages)
            n, failed, distance = self.stream.honest_audits(rate, honest_wire[ks], x[ks])
            audits += n
            false_quarantines += failed
            worst = max(worst, distance)
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
    reject_score = HubPolicy().reject_score
    judge = sim.Judge(bundle_dir, manifest.wire_dtype, tolerance)
    crafter = sim.Crafter(judge, bundle_dir)
    x = models.x_test
    clean = models.embed(x)
    clean_answer = models.predict(clean)
    ctx = atk.Context(stats, models, rng)
    stream = AuditedStream(judge, AuditSampler(rng.bytes(32)), x, deadline_messages, rng)
    population = _Population(stream, devices, messages)
    rows: list[AuditAttackRow] = []
    for name, strength, attack in ATTACKS:
        embeddings = wire(attack(clean.astype(np.float64), clean_answer, ctx))
        answer = models.predict(embeddings)
        answered = checker.check_batch(embeddings, answer).score <= reject_score
        flipped = answered & (answer != clean_answer)
        forged = crafter.forge(embeddings, x, answered, flipped, rng)
        for rate in sim.RATES:
            rows.extend(
                population.attackers((name, strength), strategy, rate, forged)
                for strategy in sim.STRATEGIES
            )

    honest_wire = wire(sim.device_embeddings(bundle_dir, x))
    honest_population = _Population(stream, honest_devices, messages)
    honest = [honest_population.honest(rate, honest_wire) for rate in sim.RATES]

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
