"""`escalade bench lifecycle`: adapters, the closed loop (clean and poisoned), bad bundles.

Everything runs offline on one seeded dataset split. The v1 bundle is built on part of the
training split (`max_train`); the rest is the fleet's traffic, inputs the bundle never saw.
Per round of the loop the fleet's escalations feed the distillation set, a student head is
trained and staged as a signed bundle, checked and loaded as a device would (part A's code),
and measured on the test split; the next round runs on it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cloud_hub.distill import DistillSet
from cloud_hub.poisoning import EmbeddingChecker, ReferenceStats
from edge_agent.bundle_update.health import load_checked
from edge_agent.profile import load_profile
from escalade.lifecycle_bench.bad_bundles import run_bad_bundles
from escalade.lifecycle_bench.fleet import Fleet, run_round
from escalade.lifecycle_bench.report import (
    AdapterResult,
    AdapterSection,
    LifecycleReport,
    LoopRound,
    LoopSection,
    Target,
)
from escalade.modelbuild import build_bundle, load_dataset
from escalade.modelbuild.adapter import QUICK, AdapterConfig, BundleGraphs, fit_and_measure
from escalade.modelbuild.distill import stage_bundle, train_head
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.layers import wire_round
from escalade.modelbuild.train import F32, I64, split_dataset
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.bundles import inspect_bundle, require_trusted, sign_bundle
from escalade_protocol.keys import Ed25519PrivateKey

Step = Callable[[str, int, int], None]

ROUNDS = 5
ADAPTER_TARGET_PP = 0.5
ESCALATION_CUT = 0.30
POISON_TARGET_PP = 0.5
POISONED_SHARE = 0.05


def _noop(description: str, done: int, total: int) -> None:
    pass


def _runner(bundle: Path) -> OnnxRunner:
    m = load_manifest(bundle)
    return OnnxRunner(*(verified_path(bundle, a).read_bytes() for a in (m.encoder, m.head, m.hub)))


def _adapters(v1: Path, v2: Path, pairs: F32, config: AdapterConfig, seed: int) -> AdapterSection:
    g1, g2 = BundleGraphs.load(v1), BundleGraphs.load(v2)
    with np.load(verified_path(v2, g2.manifest.test_split)) as data:
        test = (data["X"].astype(np.float32), data["y"].astype(np.int64))
    results = []
    for kind in ("linear", "mlp"):
        started = time.perf_counter()
        fitted = fit_and_measure(g1, g2, pairs, test, kind, config=config, seed=seed)
        results.append(
            AdapterResult(
                kind=kind,
                adapted_hub_accuracy=fitted.adapted_accuracy,
                retrained_hub_accuracy=fitted.retrained_accuracy,
                gap_pp=100 * fitted.gap,
                fit_s=time.perf_counter() - started,
            )
        )
    return AdapterSection(
        v1=f"{g1.manifest.model_id} v{g1.manifest.model_version}",
        v2=f"{g2.manifest.model_id} v{g2.manifest.model_version}",
        pairs=len(pairs),
        results=results,
    )


def _measure(runner: OnnxRunner, threshold: float, test: tuple[F32, I64]) -> tuple[float, ...]:
    x, y = test
    embedding = runner.embed(x)
    edge = runner.edge_probabilities(embedding)
    hub = runner.hub_probabilities(embedding)
    escalated = edge.max(axis=1) < threshold
    answer = np.where(escalated, hub.argmax(axis=1), edge.argmax(axis=1))
    return float(escalated.mean()), float((answer == y).mean()), float((edge.argmax(1) == y).mean())


def _loop(
    base: Path,
    work: Path,
    fleet: Fleet,
    key: Ed25519PrivateKey,
    *,
    train: tuple[F32, I64],
    traffic: tuple[F32, I64],
    calibration: tuple[F32, I64],
    test: tuple[F32, I64],
) -> LoopSection:
    manifest = load_manifest(base)
    stats = ReferenceStats.load(verified_path(base, manifest.calibration))
    checker = EmbeddingChecker(stats)
    class_means = stats.class_means.astype(np.float32)
    profile = load_profile("x86-64-cpu")
    dataset = DistillSet()
    bundle, runner, threshold = base, _runner(base), manifest.router.threshold
    base_embedding = wire_round(runner.embed(train[0]))
    cal_embedding = runner.embed(calibration[0])
    cal = (cal_embedding, calibration[1], runner.hub_probabilities(cal_embedding))
    rounds = []
    for round_no in range(ROUNDS + 1):
        escalation, cascade, edge = _measure(runner, threshold, test)
        x, _, _ = dataset.arrays(seed=fleet.seed)
        rounds.append(
            LoopRound(
                round=round_no,
                escalation_rate=escalation,
                cascade_accuracy=cascade,
                edge_accuracy=edge,
                distill_samples=len(x),
                refused=dataset.refused,
            )
        )
        if round_no == ROUNDS:
            break
        run_round(
            fleet,
            round_no,
            runner=runner,
            threshold=threshold,
            traffic=traffic,
            checker=checker,
            dataset=dataset,
            class_means=class_means,
        )
        x, y, _ = dataset.arrays(seed=fleet.seed)
        head, router = train_head(
            (base_embedding, train[1]),
            (x, y),
            cal,
            num_classes=manifest.num_classes,
            seed=fleet.seed + round_no,
        )
        staged = work / f"round-{round_no + 1}"
        stage_bundle(base, head, router, staged, key)
        # Delivered as a rollout delivers it: checked against the pinned key, loaded, warmed.
        require_trusted(inspect_bundle(staged, release_keys=[key.public_key()]))
        load_checked(staged, profile, data_dir=work, running=load_manifest(bundle))
        bundle, runner, threshold = staged, _runner(staged), router.threshold
    return LoopSection(
        devices=fleet.devices,
        poisoners=fleet.poisoners,
        requests_per_device=fleet.requests,
        rounds=rounds,
    )


def run_lifecycle_bench(
    dataset: str = "digits", *, seed: int = 0, quick: bool = False, on_step: Step | None = None
) -> LifecycleReport:
    step = on_step or _noop
    started = time.perf_counter()
    data = load_dataset(dataset)
    full = split_dataset(data, seed)
    # Half the training split builds the bundles; the other half is the fleet's traffic.
    x_train, x_fleet, y_train, y_fleet = train_test_split(
        full.X_train, full.y_train, train_size=0.5, stratify=full.y_train, random_state=seed
    )
    if quick:
        x_fleet, y_fleet = x_fleet[:400], y_fleet[:400]
    key = Ed25519PrivateKey.generate()
    devices = 30 if quick else 100
    requests = 10 if quick else 20
    with tempfile.TemporaryDirectory(prefix="escalade-lifecycle-") as tmp:
        work = Path(tmp)
        step("building v1 (PCA) and v2 (MLP encoder) bundles", 0, 1)
        build_bundle(dataset, work / "v1", seed=seed, max_train=len(x_train))
        build_bundle(
            dataset,
            work / "v2",
            seed=seed,
            max_train=len(x_train),
            encoder_kind="mlp",
            model_version=2,
        )
        sign_bundle(work / "v1", key)
        step("building v1 (PCA) and v2 (MLP encoder) bundles", 1, 1)

        step("adapters v2 -> v1", 0, 1)
        # Public paired data: every input the hub has, labelled or not (train and traffic).
        pairs = np.concatenate([full.X_train, full.X_cal])
        adapter = _adapters(
            work / "v1", work / "v2", pairs, QUICK if quick else AdapterConfig(), seed
        )
        step("adapters v2 -> v1", 1, 1)

        splits = {
            "train": (x_train, y_train),
            "traffic": (x_fleet, y_fleet),
            "calibration": (full.X_cal, full.y_cal),
            "test": (full.X_test, full.y_test),
        }
        step("closed loop, clean fleet", 0, 1)
        clean = _loop(
            work / "v1",
            work / "clean",
            Fleet(devices, 0, requests, seed),
            key,
            **splits,
        )
        step("closed loop, clean fleet", 1, 1)
        step("closed loop, 5% poisoners", 0, 1)
        poisoners = max(1, round(POISONED_SHARE * devices))
        poisoned = _loop(
            work / "v1",
            work / "poisoned",
            Fleet(devices, poisoners, requests, seed),
            key,
            **splits,
        )
        step("closed loop, 5% poisoners", 1, 1)
        step("bad bundles on every device", 0, 1)
        bad = run_bad_bundles(
            work / "v1", key, devices=devices, requests=requests, inputs=full.X_test
        )
        step("bad bundles on every device", 1, 1)

    first, last = clean.rounds[0], clean.rounds[-1]
    shift = 100 * (poisoned.rounds[-1].edge_accuracy - last.edge_accuracy)
    cut = 1 - last.escalation_rate / first.escalation_rate if first.escalation_rate else 0.0
    best_adapter = min(r.gap_pp for r in adapter.results)
    targets = [
        Target(
            name="adapter within 0.5 pp of a retrained hub",
            figure=f"{best_adapter:+.2f} pp below",
            met=best_adapter <= ADAPTER_TARGET_PP,
        ),
        Target(
            name="escalation -30% after 5 rounds at equal or better cascade accuracy",
            figure=(
                f"{first.escalation_rate:.1%} -> {last.escalation_rate:.1%} ({-cut:+.0%}), "
                f"accuracy {100 * (last.cascade_accuracy - first.cascade_accuracy):+.2f} pp"
            ),
            met=cut >= ESCALATION_CUT and last.cascade_accuracy >= first.cascade_accuracy,
        ),
        Target(
            name="5% poisoners move the distilled head by <= 0.5 pp",
            figure=f"{shift:+.2f} pp",
            met=abs(shift) <= POISON_TARGET_PP,
        ),
        Target(
            name="bad bundles refused or rolled back everywhere, 0 requests failed",
            figure=", ".join(
                f"{b.name} {b.refused_or_rolled_back}/{b.devices} ({b.requests_failed} failed)"
                for b in bad
            ),
            met=all(b.refused_or_rolled_back == b.devices and not b.requests_failed for b in bad),
        ),
    ]
    return LifecycleReport(
        dataset=data.name,
        seed=seed,
        quick=quick,
        adapter=adapter,
        loop=clean,
        poisoned_loop=poisoned,
        poisoned_shift_pp=shift,
        bad_bundles=bad,
        targets=targets,
        seconds=time.perf_counter() - started,
    )
