"""`run_poisoning_bench`: build (or load) a bundle, attack its hub, report detection figures."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from cloud_hub.audits import AuditPolicy, AuditSampler
from cloud_hub.poisoning.checks import CheckResult, EmbeddingChecker
from cloud_hub.poisoning.knn import KnnAuditor
from cloud_hub.poisoning.reference import ReferenceStats
from cloud_hub.poisoning.reputation import ReputationParams, calibrate
from cloud_hub.store.policies import HubPolicy
from escalade.poisoning_bench import attacks as atk
from escalade.poisoning_bench.audit_sim import (
    RATES,
    STRATEGIES,
    AuditedStream,
    Crafter,
    Forged,
    Judge,
    device_embeddings,
)
from escalade.poisoning_bench.harm import Harm, HarmSim
from escalade.poisoning_bench.influence import FleetCentreAttack
from escalade.poisoning_bench.latency import synthetic, time_checks
from escalade.poisoning_bench.metrics import auroc, tpr_at_fpr
from escalade.poisoning_bench.models import BundleModels, wire
from escalade.poisoning_bench.pipeline import run_pipeline_attacks
from escalade.poisoning_bench.report import (
    AttackResult,
    CohortResult,
    DriftResult,
    HonestFleetRow,
    Latency,
    PoisoningReport,
)
from escalade.poisoning_bench.streams import (
    collusion,
    drifting_device,
    honest_quarantines,
    quarantined_after,
)

StepCallback = Callable[[str, int, int], None]
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

# Honest devices: the test inputs with pixel noise (digits pixels run 0..16).
HONEST_PIXEL_NOISE = 0.5
# Natural drift: inputs get dimmer and noisier over a device's life (no attack).
NATURAL_DRIFT_LEVELS = ((1.0, 0.5), (0.97, 0.67), (0.93, 0.83), (0.9, 1.0))
DRIFT_MESSAGES = 1000  # the slow-drift attack reaches full strength at this message

ATTACKS: tuple[tuple[str, str, atk.Attack], ...] = (
    *(("scaling", f"x{f:g}", atk.scaling(f)) for f in (0.5, 2.0, 10.0)),
    ("sign_flip", "x-1", atk.sign_flip()),
    *(("noise", f"snr_{s:g}db", atk.noise(s)) for s in (20.0, 10.0, 0.0, -10.0)),
    *(("random", k, atk.random_vectors(k)) for k in ("gaussian_same_norm", "uniform")),
    *(("centroid_shift", f"alpha_{a:g}", atk.centroid_shift(a)) for a in (0.05, 0.2, 0.4, 0.6)),
    *(("class_offset", f"alpha_{a:g}", atk.class_offset(a)) for a in (0.3, 0.6)),
    *(("gradient", f"l2_{e:g}", atk.gradient(e)) for e in (0.5, 1.0, 2.0)),
    ("mimicry", "l2_2", atk.mimicry(2.0)),
)
# The attacks no per-message statistic sees: their attackers also answer audits, each way.
AUDITED = (
    ("gradient", "l2_1"),
    ("gradient", "l2_2"),
    ("mimicry", "l2_2"),
    ("class_offset", "alpha_0.6"),
)
CAUGHT_BY = {
    "malformed": "structural tier (dtype, shape, finite)",
    "replay": "nonce check (unique device + nonce record)",
    "natural_drift": "none expected: honest traffic",
    "sign_flip": "reflection tier",
}


KNN_BANK = 10_000
ATTACKERS = 50  # attacker devices per row of harm before quarantine
DEADLINE_MESSAGES = 120  # a refused reveal quarantines this many messages after its audit


def _noop(description: str, done: int, total: int) -> None:
    pass


@contextmanager
def _bundle(dataset: str, seed: int, bundle_dir: Path | None, step: StepCallback) -> Iterator[Path]:
    if bundle_dir is not None:
        yield bundle_dir
        return
    from escalade.modelbuild import build_bundle

    with tempfile.TemporaryDirectory(prefix="escalade-poisoning-") as tmp:
        step("building bundle", 0, 1)
        build_bundle(dataset, Path(tmp) / "bundle", seed=seed)
        step("building bundle", 1, 1)
        yield Path(tmp) / "bundle"


def _vary(x: F32, scale: float, pixel_noise: float, rng: np.random.Generator) -> F32:
    high = float(x.max())
    noisy = x * scale + rng.normal(0.0, pixel_noise, x.shape)
    return np.clip(noisy, 0.0, high).astype(np.float32)


def _results(checker: EmbeddingChecker, x: F32, predicted: NDArray[np.int64]) -> list[CheckResult]:
    scores = checker.check_batch(x, predicted)
    return [scores.result(i) for i in range(len(x))]


def run_poisoning_bench(
    dataset: str = "digits",
    *,
    seed: int = 0,
    on_step: StepCallback | None = None,
    bundle_dir: Path | None = None,
    quick: bool = False,
) -> PoisoningReport:
    """Attack a freshly built (or the given) bundle's hub; `quick` shrinks every population."""
    started = time.perf_counter()
    step = on_step or _noop
    rng = np.random.default_rng(seed)
    variants, devices, messages = (2, 50, 300) if quick else (10, 200, DRIFT_MESSAGES)
    with _bundle(dataset, seed, bundle_dir, step) as path:
        models = BundleModels(path)
        stats = ReferenceStats.load(models.calibration)
        checker = EmbeddingChecker(stats)
        ctx = atk.Context(stats, models, rng)

        step("honest traffic", 0, 1)
        clean = models.embed(models.x_test)
        clean_answer = models.predict(clean)
        clean_flag_rate = float(1 - checker.check_batch(clean, clean_answer).passed.mean())
        honest_inputs = _vary(np.tile(models.x_test, (variants, 1)), 1.0, HONEST_PIXEL_NOISE, rng)
        honest = models.embed(honest_inputs)
        honest_scores = checker.check_batch(honest, models.predict(honest))
        negatives = honest_scores.score
        params = calibrate(honest_scores.score, honest_scores.passed)
        step("honest traffic", 1, 1)

        attacked = _statistical_attacks(
            models, checker, clean=clean, honest=honest, negatives=negatives, ctx=ctx, step=step
        )
        results = [a.row for a in attacked]

        step("pipeline: malformed and replay", 0, 1)
        with tempfile.TemporaryDirectory(prefix="escalade-poisoning-db-") as db:
            outcome = run_pipeline_attacks(path, Path(db), clean, 10 if quick else 50)
        false_positive = outcome.honest[0] / max(outcome.honest[1], 1)
        for kind, (caught, sent) in outcome.malformed.items():
            results.append(_certain("malformed", kind, caught, sent, false_positive))
        results.append(_certain("replay", "same_envelope", *outcome.replays, false_positive))
        step("pipeline: malformed and replay", 1, 1)

        step("natural drift", 0, 1)
        pools, row = _natural_drift(models, checker, honest, negatives, rng)
        results.append(row)
        step("natural drift", 1, 1)

        step("reputation", 0, 1)
        drift = _drift(
            models,
            checker,
            params,
            honest,
            pools=pools,
            devices=devices,
            messages=messages,
            quick=quick,
            rng=rng,
        )
        step("reputation", 1, 1)

        step("cohort", 0, 1)
        cohort = _cohort(stats, honest, quick, rng)
        step("cohort", 1, 1)

        step("harm before quarantine", 0, 1)
        harm = _harm_stage(
            path,
            models,
            params,
            results,
            attacked,
            pools=pools,
            honest_inputs=honest_inputs,
            honest=honest,
            fleet=(devices, messages),
            quick=quick,
            rng=rng,
        )
        step("harm before quarantine", 1, 1)

        step("colluding groups", 0, 1)
        centre = FleetCentreAttack(
            models,
            checker,
            honest.astype(np.float64),
            honest_devices=50 if quick else 100,
            rng=rng,
        )
        influence = centre.rows()
        step("colluding groups", 1, 1)

        step("latency", 0, 1)
        native, wide = _latency(checker, honest, models, 1000 if quick else 5000, rng)
        step("latency", 1, 1)

        return PoisoningReport(
            dataset=dataset,
            seed=seed,
            quick=quick,
            embedding_dim=stats.dim,
            target_fpr=stats.target_fpr,
            honest_negatives=len(negatives),
            clean_flag_rate=round(clean_flag_rate, 4),
            honest_flag_rate=round(float(1 - honest_scores.passed.mean()), 4),
            reputation={k: float(v) for k, v in asdict(params).items()},
            drift=drift,
            cohort=cohort,
            attacks=harm.attacks,
            honest_fleet=harm.honest_fleet,
            influence=influence,
            audit_tolerance=harm.tolerance,
            audit_cost_us=harm.cost_us,
            latency_us=wide,
            latency_us_native=native,
            seconds=round(time.perf_counter() - started, 1),
        )


def _row(
    name: str, strength: str, negatives: F64, scores: F64, *, flagged: float, success: float
) -> AttackResult:
    return AttackResult(
        name=name,
        strength=strength,
        n=len(scores),
        auroc=round(auroc(negatives, scores), 4),
        tpr_at_1pct_fpr=round(tpr_at_fpr(negatives, scores, 0.01), 4),
        tpr_at_01pct_fpr=round(tpr_at_fpr(negatives, scores, 0.001), 4),
        flagged_rate=round(flagged, 4),
        undetected_success_rate=round(success, 4),
        caught_by=CAUGHT_BY.get(name, "poisoning tiers"),
    )


@dataclass(frozen=True)
class _Attacked:
    """One attack on every clean test embedding: its detection row, what the hub would do
    with each message (check results), and the forged vectors with their harm."""

    row: AttackResult
    results: list[CheckResult]
    forged: Forged


def _statistical_attacks(
    models: BundleModels,
    checker: EmbeddingChecker,
    *,
    clean: F32,
    honest: F32,
    negatives: F64,
    ctx: atk.Context,
    step: StepCallback,
) -> list[_Attacked]:
    """Every crafted-vector attack on the clean test embeddings, scored against honest ones."""
    knn = _knn_auditor(models, ctx.stats)
    knn_negatives = knn.distances(honest)
    clean_answer = models.predict(clean)
    reject_score = HubPolicy().reject_score
    out: list[_Attacked] = []
    for i, (name, strength, attack) in enumerate(ATTACKS):
        step("attacks", i, len(ATTACKS))
        adv = wire(attack(clean.astype(np.float64), clean_answer, ctx))
        answer = models.predict(adv)
        scores = checker.check_batch(adv, answer)
        success = float(((answer != clean_answer) & scores.passed).mean())
        flagged = float(1 - scores.passed.mean())
        row = _row(name, strength, negatives, scores.score, flagged=flagged, success=success)
        knn_tpr = round(tpr_at_fpr(knn_negatives, knn.distances(adv), 0.01), 4)
        answered = scores.score <= reject_score
        out.append(
            _Attacked(
                row.model_copy(update={"knn_tpr_at_1pct_fpr": knn_tpr}),
                [scores.result(j) for j in range(len(adv))],
                Forged(adv, answered, answered & (answer != clean_answer), crafted_passes=0.0),
            )
        )
    step("attacks", len(ATTACKS), len(ATTACKS))
    return out


@dataclass(frozen=True)
class _HarmStage:
    attacks: list[AttackResult]
    honest_fleet: list[HonestFleetRow]
    tolerance: float
    cost_us: float


def _harm_stage(
    path: Path,
    models: BundleModels,
    params: ReputationParams,
    rows: list[AttackResult],
    attacked: list[_Attacked],
    *,
    pools: list[list[CheckResult]],
    honest_inputs: F32,
    honest: F32,
    fleet: tuple[int, int],
    quick: bool,
    rng: np.random.Generator,
) -> _HarmStage:
    """Attacker devices against reputation and audits; honest ones (`fleet`: devices x
    messages, half with natural drift) for false quarantines, audits off and at every rate."""
    devices, messages = fleet
    policy = AuditPolicy()
    judge = Judge(path, models.manifest.wire_dtype, policy.tolerance)
    stream = AuditedStream(
        judge, AuditSampler(rng.bytes(32)), models.x_test, DEADLINE_MESSAGES, rng
    )
    sim = HarmSim(params, stream, 8 if quick else ATTACKERS, messages)
    attacks = _with_harm(rows, attacked, sim, Crafter(judge, path))
    honest_fleet = sim.honest(
        pools,
        honest_inputs,
        wire(device_embeddings(path, honest_inputs)),
        rates=(0.0, *RATES),
        devices=devices,
        drifting=devices // 2,
    )
    return _HarmStage(
        attacks, honest_fleet, policy.tolerance, _audit_cost(judge, honest, honest_inputs)
    )


def _with_harm(
    rows: list[AttackResult], attacked: list[_Attacked], sim: HarmSim, crafter: Crafter
) -> list[AttackResult]:
    """Every row with its harm before quarantine (audits off), then a row per audit rate and
    reveal strategy for the attacks in `AUDITED`. Pipeline-refused rows (malformed, replay) are
    never answered: no harm, and they never reach reputation."""
    by_key = {(a.row.name, a.row.strength): a for a in attacked}
    out: list[AttackResult] = []
    for row in rows:
        a = by_key.get((row.name, row.strength))
        out.append(row if a is None else _harmed(row, sim.attackers(a.results, a.forged)))
    for key in AUDITED:
        a = by_key[key]
        f = a.forged
        forged = crafter.forge(f.embeddings, sim.stream.x, f.answered, f.flipped, sim.stream.rng)
        for rate in RATES:
            for strategy in STRATEGIES:
                harm = sim.attackers(a.results, forged, rate=rate, strategy=strategy)
                out.append(_harmed(a.row, harm))
    return out


def _harmed(row: AttackResult, harm: Harm) -> AttackResult:
    return row.model_copy(
        update={
            "audit_rate": harm.audit_rate,
            "audit_reveal": harm.audit_reveal,
            "attacker_devices": harm.devices,
            "messages_to_quarantine": harm.messages_to_quarantine,
            "quarantined_share": harm.quarantined_share,
            "quarantined_within_300": harm.quarantined_by_target,
            "flipped_before_quarantine": harm.flipped_before_quarantine,
        }
    )


def _audit_cost(judge: Judge, honest: F32, inputs: F32) -> float:
    """Median hub time to judge one audited message, in microseconds."""
    timings = []
    for i in range(200):
        sent, x = honest[i % len(honest)], inputs[i % len(inputs)]
        prepared = judge.reveal(sent, x)
        started = time.perf_counter_ns()
        judge.judge(sent, *prepared)
        timings.append(time.perf_counter_ns() - started)
    return round(float(np.median(timings)) / 1e3, 1)


def _natural_drift(
    models: BundleModels,
    checker: EmbeddingChecker,
    honest: F32,
    negatives: F64,
    rng: np.random.Generator,
) -> tuple[list[list[CheckResult]], AttackResult]:
    """Check results per drift level (for the reputation streams), and the last level's row."""
    pools = [_results(checker, honest, models.predict(honest))]
    for scale, noise in NATURAL_DRIFT_LEVELS[1:]:
        drifted = models.embed(_vary(models.x_test, scale, noise, rng))
        pools.append(_results(checker, drifted, models.predict(drifted)))
    last = pools[-1]
    scale, noise = NATURAL_DRIFT_LEVELS[-1]
    flagged = float(np.mean([not r.passed for r in last]))
    scores = np.array([r.score for r in last])
    strength = f"scale_{scale:g}_noise_{noise:g}"
    return pools, _row("natural_drift", strength, negatives, scores, flagged=flagged, success=0.0)


def _latency(
    checker: EmbeddingChecker,
    honest: F32,
    models: BundleModels,
    count: int,
    rng: np.random.Generator,
) -> tuple[Latency, Latency]:
    """(bundle dimension, d = 384) per-check latency of the single-message `check`."""
    picks = rng.integers(0, len(honest), count)
    native = time_checks(checker, honest[picks], models.predict(honest[picks]))
    big_stats, big_x = synthetic(384, 2 * count, rng)
    big_x = big_x[:count]
    classes = rng.integers(0, big_stats.num_classes, len(big_x))
    return native, time_checks(EmbeddingChecker(big_stats), big_x, classes)


def _knn_auditor(models: BundleModels, stats: ReferenceStats) -> KnnAuditor:
    """Bank: the bundle's training-split embeddings; threshold on its calibration split.

    The bundle ships neither, so rebuild them from the dataset and seed its manifest names.
    """
    from escalade.modelbuild.datasets import load_dataset
    from escalade.modelbuild.train import split_dataset

    m = models.manifest
    split = split_dataset(load_dataset(m.dataset), m.seed)
    # A sampled bank keeps the audit's scans short on large datasets (Fashion-MNIST: 50k).
    rng = np.random.default_rng(m.seed)
    bank = split.X_train[rng.permutation(len(split.X_train))[:KNN_BANK]]
    return KnnAuditor(stats, models.embed(bank), models.embed(split.X_cal))


def _certain(
    name: str, strength: str, caught: int, sent: int, false_positive: float
) -> AttackResult:
    """Attacks refused outright by the pipeline: a binary detector, TPR = refused share."""
    rate = caught / sent if sent else 0.0
    return AttackResult(
        name=name,
        strength=strength,
        n=sent,
        auroc=round((1 + rate - false_positive) / 2, 4),
        tpr_at_1pct_fpr=round(rate, 4),
        tpr_at_01pct_fpr=round(rate, 4),
        flagged_rate=round(rate, 4),
        undetected_success_rate=round(1 - rate, 4),
        caught_by=CAUGHT_BY[name],
    )


def _blend(x: F64, ramp: F64, centre: F64) -> F64:
    """Pulled toward another class's centroid, reaching alpha 0.6 at the last message."""
    return x + 0.6 * ramp * (centre - x)


def _translate(x: F64, ramp: F64, offset: F64) -> F64:
    return x + ramp * offset


def _drift(
    models: BundleModels,
    checker: EmbeddingChecker,
    params: ReputationParams,
    honest: F32,
    *,
    pools: list[list[CheckResult]],
    devices: int,
    messages: int,
    quick: bool,
    rng: np.random.Generator,
) -> DriftResult:
    """Slow-drift attackers against the reputation tracker; honest devices for false alarms."""
    stats = checker.stats
    x = honest.astype(np.float64)
    blend, offset = [], []
    for _ in range(2 if quick else 5):
        source, target = rng.choice(stats.num_classes, 2, replace=False)
        centre = stats.class_means[target]
        step = stats.class_means[target] - stats.class_means[source]
        perturb = partial(_blend, centre=centre)
        results = drifting_device(
            models, checker, x, perturb=perturb, messages=DRIFT_MESSAGES, rng=rng
        )
        blend.append(quarantined_after(results, params))
        # A constant-offset drift keeps the clean spread: the per-message tiers barely see it.
        perturb = partial(_translate, offset=step)
        results = drifting_device(
            models, checker, x, perturb=perturb, messages=DRIFT_MESSAGES, rng=rng
        )
        offset.append(quarantined_after(results, params))
    caught = [m for m in blend if m is not None]
    return DriftResult(
        messages_to_quarantine=max(caught) if len(caught) == len(blend) else None,
        messages_to_quarantine_each=blend,
        offset_drift_messages_to_quarantine=offset,
        false_quarantines=honest_quarantines(
            pools,
            devices=devices,
            drifting=devices // 2,
            messages=messages,
            params=params,
            rng=rng,
        ),
        honest_devices=devices,
        natural_drift_devices=devices // 2,
        messages_per_device=messages,
    )


def _cohort(
    stats: ReferenceStats, honest: F32, quick: bool, rng: np.random.Generator
) -> CohortResult:
    """Colluders add one shared offset, small enough to pass the per-message tiers."""
    window = 50
    # A clean window mean lies ~ sqrt(d / n) from the centre in whitened units, give or take
    # sqrt(1 / 2n) (a chi distribution scaled by 1 / sqrt(n)); the threshold is 5 of those out.
    threshold = float(np.sqrt(stats.dim / window) + 5 * np.sqrt(1 / (2 * window)))
    source, target = rng.choice(stats.num_classes, 2, replace=False)
    # The class_offset attack at alpha 0.6: passes the per-message tiers most of the time.
    offset = 0.6 * (stats.class_means[target] - stats.class_means[source])
    honest_devices, colluders = (50, 5) if quick else (100, 10)
    flagged, false = collusion(
        stats,
        honest.astype(np.float64),
        offset,
        honest_devices=honest_devices,
        colluders=colluders,
        window=window,
        threshold=threshold,
        rng=rng,
    )
    return CohortResult(
        window=window,
        threshold=round(threshold, 3),
        colluders=colluders,
        colluders_flagged=flagged,
        honest_devices=honest_devices,
        honest_flagged=false,
    )
