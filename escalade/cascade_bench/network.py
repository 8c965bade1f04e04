"""The model network in the cascade bench: fusion and multi-model policies beside today's.

Per seed, on the bundle's test split, at one escalation mask (the local max probability
below the calibration split's 20% quantile, so <= 20% escalated):

    cascade          escalated inputs answered by the generalist alone (today's hub)
    fusion           ... by the generalist pooled with the local probabilities
    arm:<name>       ... by one fixed arm of the network (its models, pooled)
    network          ... by the arm the meta-router picks per input, learning online
    oracle-arm       ... by any arm that is right (an upper bound)

against hub-only (the generalist for every input) and the monolith (the wide model, the
network's largest, for every input: "one large model"). The router streams the escalated
inputs in order from the bundle's prior with its exploration rate and learns from true
labels of the arms it ran (a bench stands in for feedback the hub would get from outcome
reports); its regret is against the best fixed arm on the same inputs after warm-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from cloud_hub.models.fusion import SPECIALIST_SLOT, arm_sources, pool
from cloud_hub.models.meta_router import MetaRouter, RouterPrior, RouterSettings, features
from escalade.cascade_bench.report import Estimate, NetworkPolicy, NetworkReport
from escalade.modelbuild.layers import wire_round
from escalade_protocol.answer import RouteReason
from escalade_protocol.artifacts import (
    EMBEDDING,
    PROBABILITIES,
    ModelManifest,
    NetworkArm,
    verified_path,
)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
BOOL = NDArray[np.bool_]
ESCALATION_BUDGET = 0.20
WARMUP_SHARE = 0.2
MONOLITH = "wide"
TIMED = 200
ARTICLE = "article: +2.3 pp accuracy, -44% latency, -73% cost vs one large model"


@dataclass
class NetworkSeed:
    edge_ok: BOOL
    hub_ok: BOOL  # the generalist for every input
    monolith_ok: BOOL  # the wide model for every input
    mask: BOOL
    # Per policy: correct when escalated (rows = all test inputs), price and model ms per input.
    escalated_ok: dict[str, BOOL]
    price: dict[str, F64]
    model_ms: dict[str, F64]
    model_costs: dict[str, tuple[float, float]]  # name -> (price per 1k, ms)
    edge_ms: float
    regret_pp: float
    best_fixed: str
    router_share_batched: float
    router_share_single: float
    explored: float


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _ms_single(fn: object, rows: F32) -> float:
    """Median ms of `fn` on one row at a time."""
    assert callable(fn)
    times = []
    for i in range(min(TIMED, len(rows))):
        started = time.perf_counter()
        fn(rows[i : i + 1])
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def network_seed(
    bundle: Path,
    manifest: ModelManifest,
    *,
    local_test: F32,
    embedding_test: F32,
    local_cal: F32,
    y_test: NDArray[np.int64],
    edge_ms: float,
    seed: int,
) -> NetworkSeed:
    spec = manifest.network
    assert spec is not None
    wire = wire_round(embedding_test)
    sessions = {m.name: _session(verified_path(bundle, m.file)) for m in spec.models}

    def run(name: str, x: F32) -> F32:
        return np.asarray(sessions[name].run([PROBABILITIES], {EMBEDDING: x})[0], np.float32)

    outputs = {name: run(name, wire) for name in sessions}
    costs = {
        m.name: (m.price_per_1k, _ms_single(lambda x, n=m.name: run(n, x), wire))
        for m in spec.models
    }
    specialists = [(m.classes, outputs[m.name]) for m in spec.models if m.kind == "specialist"]
    spec_names = [m.name for m in spec.models if m.kind == "specialist"]
    masses = np.stack([local_test[:, list(c)].sum(axis=1) for c, _ in specialists], axis=1)
    routed_specialist = np.asarray(spec_names)[masses.argmax(axis=1)]

    arms = list(spec.arms)
    fused = [pool(arm_sources(a.models, local_test, outputs, specialists), a.weights) for a in arms]
    arm_ok = np.stack([f.argmax(axis=1) == y_test for f in fused], axis=1)  # [n, arms]
    arm_price, arm_ms = _arm_costs(arms, costs, routed_specialist)

    threshold = float(np.quantile(local_cal.max(axis=1), ESCALATION_BUDGET))
    mask = local_test.max(axis=1) < threshold
    edge_ok = local_test.argmax(axis=1) == y_test
    gen = outputs["generalist"]
    names = [a.name for a in arms]
    escalated_ok: dict[str, BOOL] = {
        "cascade": gen.argmax(axis=1) == y_test,
        "fusion": arm_ok[:, names.index("generalist")],
    }
    price: dict[str, F64] = {"cascade": np.full(len(y_test), costs["generalist"][0] / 1000)}
    model_ms: dict[str, F64] = {"cascade": np.full(len(y_test), costs["generalist"][1])}
    price["fusion"], model_ms["fusion"] = price["cascade"], model_ms["cascade"]
    for k, a in enumerate(arms):
        escalated_ok[f"arm:{a.name}"] = arm_ok[:, k]
        price[f"arm:{a.name}"], model_ms[f"arm:{a.name}"] = arm_price[:, k], arm_ms[:, k]

    # The meta-router, streamed over the escalated inputs in order.
    rows = np.flatnonzero(mask)
    prior = RouterPrior.from_bytes(verified_path(bundle, spec.router).read_bytes())
    router = MetaRouter(
        prior,
        prices=arm_price.max(axis=0),
        model_ms=arm_ms.max(axis=0),
        settings=RouterSettings(exploration_rate=spec.exploration_rate),
        seed=seed,
    )
    chosen, explored = _stream(router, features(local_test[rows], wire[rows]), arm_ok[rows])
    network_ok = np.zeros(len(y_test), bool)
    network_ok[rows] = arm_ok[rows, chosen]
    escalated_ok["network"] = network_ok
    network_price = np.zeros(len(y_test))
    network_ms = np.zeros(len(y_test))
    all_price = price_all(costs, arms, routed_specialist, rows)
    network_price[rows] = np.where(explored, all_price[0], arm_price[rows, chosen])
    network_ms[rows] = np.where(explored, all_price[1], arm_ms[rows, chosen])
    price["network"], model_ms["network"] = network_price, network_ms
    escalated_ok["oracle-arm"] = np.asarray(arm_ok.any(axis=1), bool)
    price["oracle-arm"], model_ms["oracle-arm"] = arm_price.max(axis=1), arm_ms.max(axis=1)

    after = slice(int(WARMUP_SHARE * len(rows)), None)
    fixed = arm_ok[rows][after].mean(axis=0)
    best_fixed = int(np.argmax(fixed))
    regret = float(fixed[best_fixed] - network_ok[rows][after].mean()) if len(rows) else 0.0
    batched, single = _router_share(
        router,
        local=local_test[rows],
        wire=wire[rows],
        arms=arms,
        specialist=routed_specialist[rows],
        run=run,
    )
    return NetworkSeed(
        edge_ok=edge_ok,
        hub_ok=gen.argmax(axis=1) == y_test,
        monolith_ok=outputs[MONOLITH].argmax(axis=1) == y_test,
        mask=mask,
        escalated_ok=escalated_ok,
        price=price,
        model_ms=model_ms,
        model_costs=costs,
        edge_ms=edge_ms,
        regret_pp=100 * regret,
        best_fixed=arms[best_fixed].name,
        router_share_batched=batched,
        router_share_single=single,
        explored=float(explored.mean()) if len(rows) else 0.0,
    )


def _arm_costs(
    arms: list[NetworkArm], costs: dict[str, tuple[float, float]], specialist: NDArray[np.str_]
) -> tuple[F64, F64]:
    """[n, arms] price per answer and model ms (the routed specialist's, per row)."""
    n = len(specialist)
    price = np.zeros((n, len(arms)))
    ms = np.zeros((n, len(arms)))
    spec_price = np.asarray([costs[s][0] for s in specialist]) if n else np.zeros(0)
    spec_ms = np.asarray([costs[s][1] for s in specialist]) if n else np.zeros(0)
    for k, arm in enumerate(arms):
        for name in arm.models:
            if name == SPECIALIST_SLOT:
                price[:, k] += spec_price / 1000
                ms[:, k] += spec_ms
            else:
                price[:, k] += costs[name][0] / 1000
                ms[:, k] += costs[name][1]
    return price, ms


def price_all(
    costs: dict[str, tuple[float, float]],
    arms: list[NetworkArm],
    specialist: NDArray[np.str_],
    rows: NDArray[np.int64],
) -> tuple[F64, F64]:
    """An explored input runs every model of every arm once (the routed specialist)."""
    plain = {m for a in arms for m in a.models if m != SPECIALIST_SLOT}
    base_price = sum(costs[m][0] for m in plain) / 1000
    base_ms = sum(costs[m][1] for m in plain)
    uses_specialist = any(SPECIALIST_SLOT in a.models for a in arms)
    sp = np.asarray([costs[s][0] / 1000 if uses_specialist else 0.0 for s in specialist[rows]])
    sm = np.asarray([costs[s][1] if uses_specialist else 0.0 for s in specialist[rows]])
    return base_price + sp, base_ms + sm


def _stream(router: MetaRouter, x: F64, arm_ok: BOOL) -> tuple[NDArray[np.int64], BOOL]:
    """Route each context in order; learn the chosen arm's outcome (every arm's when
    exploring). Returns the arms chosen and which inputs were explored."""
    chosen = np.empty(len(x), np.int64)
    explored = np.zeros(len(x), bool)
    for i in range(len(x)):
        choice = router.choose(x[i])
        chosen[i] = choice.arm
        if choice.reason is RouteReason.EXPLORE:
            explored[i] = True
            router.update(x[i], arm_ok[i].astype(np.float64))
        else:
            arm = np.asarray([choice.arm])
            router.update(x[i], arm_ok[i, arm].astype(np.float64), arm)
    return chosen, explored


def _router_share(
    router: MetaRouter,
    *,
    local: F32,
    wire: F32,
    arms: list[NetworkArm],
    specialist: NDArray[np.str_],
    run: object,
) -> tuple[float, float]:
    """The router's own time as a share of the models it routes to: batched (features and
    choices for all escalated inputs at once vs the chosen models' batched runs) and single
    (one decision vs one chosen arm's models at batch 1)."""
    assert callable(run)
    if not len(local):
        return 0.0, 0.0
    started = time.perf_counter()
    chosen = router.choose_batch(features(local, wire))
    router_s = time.perf_counter() - started
    model_s = 0.0
    for k, arm in enumerate(arms):
        sel = chosen == k
        if not sel.any():
            continue
        for name in arm.models:
            names = specialist[sel] if name == SPECIALIST_SLOT else np.full(sel.sum(), name)
            for concrete in np.unique(names):
                batch = wire[sel][names == concrete]
                started = time.perf_counter()
                run(str(concrete), batch)
                model_s += time.perf_counter() - started
    one_router = _ms_single(lambda x: router.choose(features(local[0], x[0]), draw=0.99), wire)
    first = arms[int(chosen[0])]
    one_models = sum(
        _ms_single(lambda x, n=(specialist[0] if m == SPECIALIST_SLOT else m): run(str(n), x), wire)
        for m in first.models
    )
    return router_s / model_s, one_router / one_models


def _estimate(point: F64, resampled: F64) -> Estimate:
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Estimate(mean=float(point.mean()), low=float(low), high=float(high))


def network_report(
    seeds: list[NetworkSeed], *, resamples: int, rtt_ms: float, network_ms: float
) -> NetworkReport:
    """`network_ms`: the network model's time per escalation (RTT plus the upload)."""
    """Policies at one mask, paired bootstrap of the accuracy delta vs hub-only per seed."""
    names = list(seeds[0].escalated_ok)
    point: dict[str, list[float]] = {p: [] for p in names}
    deltas: dict[str, list[F64]] = {p: [] for p in names}
    for s, run in enumerate(seeds):
        n = len(run.edge_ok)
        rng = np.random.default_rng(20_000 + s)
        w = np.vstack(
            [np.ones(n)]
            + [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]
        ).astype(np.float64)
        hub = w @ run.hub_ok / n
        for p in names:
            correct = np.where(run.mask, run.escalated_ok[p], run.edge_ok)
            acc = w @ correct / n
            point[p].append(float(acc[0]))
            deltas[p].append(acc - hub)
    hub_acc = float(np.mean([r.hub_ok.mean() for r in seeds]))
    mono_acc = float(np.mean([r.monolith_ok.mean() for r in seeds]))
    mono_price = float(np.mean([r.model_costs[MONOLITH][0] for r in seeds]))
    mono_latency = float(
        np.mean([r.edge_ms + network_ms + r.model_costs[MONOLITH][1] for r in seeds])
    )
    policies = []
    for p in names:
        stacked = np.stack(deltas[p], axis=1)  # [resamples + 1, seeds]
        per_seed_point = stacked[0]
        cost = float(np.mean([1000 * r.price[p][r.mask].sum() / len(r.mask) for r in seeds]))
        latency = float(
            np.mean([r.edge_ms + (r.mask * (network_ms + r.model_ms[p])).mean() for r in seeds])
        )
        policies.append(
            NetworkPolicy(
                name=p,
                accuracy=float(np.mean(point[p])),
                delta_vs_hub=_estimate(per_seed_point, stacked[1:].mean(axis=1)),
                delta_vs_monolith=float(np.mean(point[p]) - mono_acc),
                escalation_rate=float(np.mean([r.mask.mean() for r in seeds])),
                cost_per_1k=cost,
                cost_vs_monolith=cost / mono_price - 1 if mono_price else 0.0,
                latency_mean_ms=latency,
                latency_vs_monolith=latency / mono_latency - 1,
            )
        )
    return NetworkReport(
        escalation_budget=ESCALATION_BUDGET,
        hub_only_accuracy=hub_acc,
        monolith=MONOLITH,
        monolith_accuracy=mono_acc,
        monolith_cost_per_1k=mono_price,
        monolith_latency_ms=mono_latency,
        # Specialists differ between seeds (groups come from each seed's confusions): each
        # name's mean over the seeds that have it.
        model_costs={
            name: (
                float(np.mean([r.model_costs[name][0] for r in seeds if name in r.model_costs])),
                float(np.mean([r.model_costs[name][1] for r in seeds if name in r.model_costs])),
            )
            for name in dict.fromkeys(n for r in seeds for n in r.model_costs)
        },
        policies=policies,
        router_regret_pp=[r.regret_pp for r in seeds],
        router_best_fixed=[r.best_fixed for r in seeds],
        router_explored=[r.explored for r in seeds],
        router_cost_share_batched=[r.router_share_batched for r in seeds],
        router_cost_share_single=[r.router_share_single for r in seeds],
        article=ARTICLE,
    )
