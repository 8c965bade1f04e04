"""`run_cascade_bench`: build a bundle per seed, then compare routing policies on its test split."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.router import RouterConfig, SignalName, signal_matrix
from escalade.cascade_bench import curves
from escalade.cascade_bench.measure import per_input_times_ms, wire_sizes
from escalade.cascade_bench.network import NetworkSeed, network_report, network_seed
from escalade.cascade_bench.online import stream
from escalade.cascade_bench.report import (
    CascadeReport,
    Estimate,
    NetworkReport,
    OnlineComparison,
    PolicyResult,
    Timings,
    Wire,
)
from escalade.cascade_bench.targets import check_targets
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.learned_router import fit_learned_router
from escalade.modelbuild.router import calibrate_threshold, miss_rate
from escalade_protocol.artifacts import ModelManifest, verified_path

StepCallback = Callable[[str, int, int], None]
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

SIGNALS: tuple[SignalName, ...] = ("max_probability", "margin", "neg_entropy", "learned")
CURVE_POLICIES = ("random", *SIGNALS, "oracle")
POLICIES = ("edge_only", "hub_only", *CURVE_POLICIES[:-1], "online", "oracle")
GRID = np.linspace(0.0, 1.0, 201)
CPT_SHARES = (0.5, 0.8, 0.95)


@dataclass
class SeedRun:
    """One seed's test split: correctness, escalation masks and curve inputs per policy."""

    edge_correct: NDArray[np.bool_]
    hub_correct: NDArray[np.bool_]
    masks: dict[str, NDArray[np.bool_]]
    sorted_scores: dict[str, curves.Sorted]
    edge_ms: F32
    hub_ms: F32
    online: OnlineComparison
    timings: Timings
    wire: Wire
    operating: dict[str, str] = field(default_factory=dict)
    network: NetworkSeed | None = None


def _calibration_split(
    bundle: Path, manifest: ModelManifest, dataset: str, seed: int
) -> tuple[F32, NDArray[np.int64]]:
    if manifest.calibration_split is not None:
        data = np.load(verified_path(bundle, manifest.calibration_split))
        return np.asarray(data["X"], np.float32), np.asarray(data["y"], np.int64)
    # Bundles built before calibration_split.npz existed: the split is deterministic per seed.
    from escalade.modelbuild.datasets import load_dataset
    from escalade.modelbuild.train import split_dataset

    split = split_dataset(load_dataset(dataset), seed)
    return split.X_cal, split.y_cal


def _predict(runner: OnnxRunner, x: F32) -> tuple[F32, F32, F32]:
    embedding = runner.embed(x)
    return embedding, runner.edge_probabilities(embedding), runner.hub_probabilities(embedding)


def _seed_run(bundle: Path, manifest: ModelManifest, dataset: str, seed: int) -> SeedRun:
    runner = OnnxRunner(
        *(
            verified_path(bundle, a).read_bytes()
            for a in (manifest.encoder, manifest.head, manifest.hub)
        )
    )
    test = np.load(verified_path(bundle, manifest.test_split))
    x_test, y_test = np.asarray(test["X"], np.float32), np.asarray(test["y"], np.int64)
    x_cal, y_cal = _calibration_split(bundle, manifest, dataset, seed)
    emb_c, edge_c, hub_c = _predict(runner, x_cal)
    emb_t, edge_t, hub_t = _predict(runner, x_test)
    pred = {
        "cal": (edge_c.argmax(axis=1), hub_c.argmax(axis=1)),
        "test": (edge_t.argmax(axis=1), hub_t.argmax(axis=1)),
    }
    learned = fit_learned_router(edge_c, emb_c, pred["cal"][0] == y_cal)
    scores_c: dict[str, F64] = {**signal_matrix(edge_c), "learned": learned.predict(edge_c, emb_c)}
    scores_t: dict[str, F64] = {**signal_matrix(edge_t), "learned": learned.predict(edge_t, emb_t)}
    edge_ok, hub_ok = pred["test"][0] == y_test, pred["test"][1] == y_test
    rng = np.random.default_rng(seed)
    scores_t["random"] = rng.random(len(y_test))
    # Oracle: the fixable first, the inputs the hub would break last.
    scores_t["oracle"] = np.where(hub_ok & ~edge_ok, 0.0, np.where(edge_ok & ~hub_ok, 2.0, 1.0))

    masks: dict[str, NDArray[np.bool_]] = {
        "edge_only": np.zeros(len(y_test), bool),
        "hub_only": np.ones(len(y_test), bool),
        "oracle": hub_ok & ~edge_ok,
    }
    calibrated = {}
    for name in SIGNALS:
        cal = calibrate_threshold(scores_c[name], *pred["cal"], y_cal, signal=name)
        calibrated[name] = cal
        masks[name] = scores_t[name] < cal.threshold
    prior = calibrated["max_probability"]
    masks["random"] = scores_t["random"] < prior.expected_escalation_rate

    edge_ms, hub_ms, timings = per_input_times_ms(runner, x_test)
    n = len(y_test)
    config = RouterConfig(
        signal="max_probability",
        threshold=prior.threshold,
        target_rate=prior.expected_escalation_rate,
        target_miss_rate=miss_rate(scores_c["max_probability"], *pred["cal"], prior.threshold),
        window=min(512, n // 2),
        warmup=min(128, n // 4),
    )
    agreed = pred["test"][0] == pred["test"][1]
    masks["online"] = stream(config, scores_t, agreed, hub_ms, seed)
    network = None
    if manifest.network is not None:
        network = network_seed(
            bundle,
            manifest,
            local_test=edge_t,
            embedding_test=emb_t,
            local_cal=edge_c,
            y_test=y_test,
            edge_ms=float(edge_ms.mean()),
            seed=seed,
        )
    return SeedRun(
        network=network,
        edge_correct=edge_ok,
        hub_correct=hub_ok,
        masks=masks,
        sorted_scores={p: curves.Sorted.of(scores_t[p], edge_ok, hub_ok) for p in CURVE_POLICIES},
        edge_ms=edge_ms,
        hub_ms=hub_ms,
        online=_online_comparison(masks, scores_t, edge_ok, hub_ok),
        timings=timings,
        wire=wire_sizes(manifest.model_id, emb_t[0], manifest.input_dim, manifest.wire_dtype),
    )


def _online_comparison(
    masks: dict[str, NDArray[np.bool_]],
    scores: dict[str, F64],
    edge_ok: NDArray[np.bool_],
    hub_ok: NDArray[np.bool_],
) -> OnlineComparison:
    warm = len(edge_ok) // 5
    after = slice(warm, None)

    def point(mask: NDArray[np.bool_]) -> tuple[float, float]:
        correct = np.where(mask[after], hub_ok[after], edge_ok[after])
        return float(correct.mean()), float(mask[after].mean())

    online_acc, online_rate = point(masks["online"])
    fixed_acc, fixed_rate = point(masks["max_probability"])
    rates, acc = curves.curve(
        curves.Sorted.of(scores["max_probability"][after], edge_ok[after], hub_ok[after])
    )
    return OnlineComparison(
        warmup_inputs=warm,
        online_accuracy=online_acc,
        online_escalation_rate=online_rate,
        fixed_accuracy=fixed_acc,
        fixed_escalation_rate=fixed_rate,
        fixed_curve_accuracy_at_online_rate=float(np.interp(online_rate, rates, acc)),
    )


def _estimate(point: F64, resampled: F64) -> Estimate:
    """point: per seed; resampled: [B, seeds]. Interval of the mean over seeds."""
    means = resampled.mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(mean=float(point.mean()), low=float(low), high=float(high))


def _bootstrap(runs: list[SeedRun], resamples: int) -> dict[str, dict[str, F64]]:
    """Per policy and metric: [resamples + 1, seeds]; row 0 is the unweighted point estimate."""
    out: dict[str, dict[str, list[list[float]]]] = {p: {} for p in POLICIES}
    for s, run in enumerate(runs):
        n = len(run.edge_correct)
        rng = np.random.default_rng(10_000 + s)
        for b in range(resamples + 1):
            w = (
                np.ones(n)
                if b == 0
                else np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
            )
            hub_acc = float(w @ run.hub_correct) / n
            edge_acc = float(w @ run.edge_correct) / n
            for policy in POLICIES:
                mask = run.masks[policy]
                correct = np.where(mask, run.hub_correct, run.edge_correct)
                acc = float(w @ correct) / n
                metrics = {
                    "accuracy": acc,
                    "delta_vs_edge": acc - edge_acc,
                    "delta_vs_hub": acc - hub_acc,
                    "escalation_rate": float(w @ mask) / n,
                }
                if policy in run.sorted_scores:
                    rates, acc_curve = curves.curve(run.sorted_scores[policy], w)
                    metrics["apgr"] = curves.apgr(rates, acc_curve)
                    for share in CPT_SHARES:
                        metrics[f"cpt{int(share * 100)}"] = curves.cpt(rates, acc_curve, share)
                for key, value in metrics.items():
                    out[policy].setdefault(key, [[] for _ in runs])[s].append(value)
    return {p: {k: np.asarray(v, np.float64).T for k, v in m.items()} for p, m in out.items()}


def _latency(run: SeedRun, mask: NDArray[np.bool_], network_ms: float) -> tuple[float, float]:
    total = run.edge_ms + mask * (network_ms + run.hub_ms)
    return float(total.mean()), float(np.percentile(total, 95))


OPERATING = {
    "edge_only": "never escalate",
    "hub_only": "always escalate (the embedding)",
    "random": "random, at max_probability's calibrated escalation rate",
    "online": "online router from the calibrated prior (max_probability), streamed in order",
    "oracle": "escalate exactly when the hub is right and the edge wrong",
}


def _policies(
    runs: list[SeedRun],
    boot: dict[str, dict[str, F64]],
    *,
    rtt_ms: float,
    uplink_mbps: float,
    hub_price: float,
) -> list[PolicyResult]:
    wire = runs[0].wire
    network_ms = rtt_ms + wire.embedding_envelope_bytes * 8 / (uplink_mbps * 1e3)
    results = []
    for policy in POLICIES:
        m = boot[policy]

        def est(key: str, m: dict[str, F64] = m) -> Estimate:
            return _estimate(m[key][0], m[key][1:])

        rate = float(m["escalation_rate"][0].mean())
        latencies = np.asarray([_latency(r, r.masks[policy], network_ms) for r in runs])
        bytes_per_input = rate * wire.embedding_envelope_bytes
        curve = "apgr" in m
        results.append(
            PolicyResult(
                name=policy,
                operating_point=OPERATING.get(policy, "calibrated: match hub-only accuracy"),
                accuracy=est("accuracy"),
                delta_vs_edge=est("delta_vs_edge"),
                delta_vs_hub=est("delta_vs_hub"),
                escalation_rate=est("escalation_rate"),
                apgr=est("apgr") if curve else None,
                cpt50=est("cpt50") if curve else None,
                cpt80=est("cpt80") if curve else None,
                cpt95=est("cpt95") if curve else None,
                bytes_per_input=bytes_per_input,
                bytes_reduction_vs_raw=(
                    wire.raw_envelope_bytes / bytes_per_input if bytes_per_input else None
                ),
                latency_mean_ms=float(latencies[:, 0].mean()),
                latency_p95_ms=float(latencies[:, 1].mean()),
                cost_per_1k=1000.0 * rate * hub_price,
            )
        )
    return results


def _network_report(
    runs: list[SeedRun], resamples: int, *, rtt_ms: float, uplink_mbps: float
) -> NetworkReport | None:
    seeds = [r.network for r in runs if r.network is not None]
    if not seeds:
        return None
    network_ms = rtt_ms + runs[0].wire.embedding_envelope_bytes * 8 / (uplink_mbps * 1e3)
    return network_report(seeds, resamples=resamples, rtt_ms=rtt_ms, network_ms=network_ms)


def _noop(description: str, done: int, total: int) -> None:
    pass


def run_cascade_bench(
    dataset: str,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    on_step: StepCallback | None = None,
    rtt_ms: float = 40.0,
    uplink_mbps: float = 10.0,
    hub_price: float = 0.001,
    quick: bool = False,
    resamples: int | None = None,
    network: bool = False,
) -> CascadeReport:
    """Compare routing policies on `dataset`, building one bundle per seed.

    rtt_ms / uplink_mbps: the network model for escalations; hub_price: cost per escalation.
    quick: fewer bootstrap resamples (200 instead of 1000). network: build each bundle with
    the hub's model network and add its fusion and multi-model policies (`network.py`).
    """
    from escalade.modelbuild import build_bundle

    step = on_step or _noop
    started = time.perf_counter()
    total = 2 * len(seeds) + 1
    runs: list[SeedRun] = []
    with tempfile.TemporaryDirectory(prefix="escalade-cascade-") as tmp:
        for i, seed in enumerate(seeds):
            step(f"seed {seed}: building bundle", 2 * i, total)
            bundle = Path(tmp) / f"seed{seed}"
            manifest = build_bundle(dataset, bundle, seed=seed, network=network)
            step(f"seed {seed}: routing the test split", 2 * i + 1, total)
            runs.append(_seed_run(bundle, manifest, dataset, seed))
    resamples = resamples if resamples is not None else (200 if quick else 1000)
    step("bootstrap", 2 * len(seeds), total)
    boot = _bootstrap(runs, resamples)
    policies = _policies(runs, boot, rtt_ms=rtt_ms, uplink_mbps=uplink_mbps, hub_price=hub_price)
    by_name = {p.name: p for p in policies}
    curve_means = {
        p: np.mean([curves.on_grid(*curves.curve(r.sorted_scores[p]), GRID) for r in runs], axis=0)
        for p in CURVE_POLICIES
    }
    timings = [r.timings for r in runs]
    report = CascadeReport(
        dataset=dataset,
        seeds=list(seeds),
        test_inputs=len(runs[0].edge_correct),
        bootstrap_resamples=resamples,
        rtt_ms=rtt_ms,
        uplink_mbps=uplink_mbps,
        hub_price=hub_price,
        edge_accuracy=by_name["edge_only"].accuracy,
        hub_accuracy=by_name["hub_only"].accuracy,
        wire=runs[0].wire,
        timings=Timings(
            encoder_us=float(np.median([t.encoder_us for t in timings])),
            head_us=float(np.median([t.head_us for t in timings])),
            hub_us=float(np.median([t.hub_us for t in timings])),
        ),
        policies=policies,
        online=[r.online for r in runs],
        targets=[],
        curve_rates=[float(v) for v in GRID],
        curves={p: [float(v) for v in c] for p, c in curve_means.items()},
        points={p.name: (p.escalation_rate.mean, p.accuracy.mean) for p in policies},
        seconds=time.perf_counter() - started,
        network=_network_report(runs, resamples, rtt_ms=rtt_ms, uplink_mbps=uplink_mbps),
    )
    step("done", total, total)
    return report.model_copy(update={"targets": check_targets(report)})
