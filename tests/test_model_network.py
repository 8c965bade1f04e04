"""The hub's model network: several models, the meta-router, fusion, answer v3; and a real
agent's answers through a real hub (processes, HTTP) that show the models and the fusion."""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from admin_stack import (
    Admin,
    admin_fixture,  # noqa: F401 (the `admin` fixture)
)
from agent_stack import agent_argv, enrolled, free_port, write_config
from enrollment import enroll_request

from cloud_hub.admin.fleet_models import DeviceStatsPage
from cloud_hub.admin.models import TokenCreated
from cloud_hub.app import model_network
from cloud_hub.config import HubConfig
from cloud_hub.device_reports.queries import store_outcomes
from cloud_hub.enrollment import create_token, enroll
from cloud_hub.errors import HubError
from cloud_hub.escalation import EscalationPipeline
from cloud_hub.escalation.pipeline import Opened
from cloud_hub.identity import HubIdentity
from cloud_hub.models import MetaRouter, RouterPrior, RouterSettings, features
from cloud_hub.models.fusion import expand_specialist, fit_pooling_weights, pool
from cloud_hub.serving import HubModel
from cloud_hub.store import Store, sqlite_url
from cloud_hub.store.costs import CostTotals, add_device_costs, device_cost_totals
from edge_agent.identity import DeviceIdentity
from escalade.cascade_bench.network import network_report, network_seed
from escalade.cascade_bench.table import network_lines
from escalade.cascade_bench.targets import network_targets
from escalade.modelbuild import build_bundle
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.network import class_groups
from escalade.procs import service
from escalade_protocol import envelope
from escalade_protocol.answer import (
    Answer,
    AnswerCost,
    FusionKind,
    RouteReason,
)
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.bundles import inspect_bundle
from escalade_protocol.codec import Writer
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.tensor import Tensor

MODELS = "generalist,small,wide,specialists"
# Building the seven-model bundle and starting two processes: minutes on a busy machine.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def network_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("network-bundle")
    # A small training split and the numpy trainer (hub_hidden) keep the seven models'
    # training to ~20 s of CPU.
    build_bundle(
        "digits", out, seed=0, max_train=500, network=True, hub_hidden=(128, 128), hub_epochs=40
    )
    return out


def _answer(**fields: object) -> Answer:
    base: dict[str, object] = {
        "request_digest": bytes(32),
        "hub_key_id": bytes(16),
        "model_id": "m",
        "model_version": 1,
        "label": 2,
        "probabilities": Tensor.from_numpy(np.full(4, 0.25, np.float32), "float32"),
        "timestamp_ms": 7,
    }
    return Answer(**{**base, **fields})  # type: ignore[arg-type]


def test_answer_v3_round_trip_and_v2_still_decodes() -> None:
    answer = _answer(
        models=("wide", "specialist-tops"),
        route_reason=RouteReason.CHEAPEST_NEAR_BEST,
        fusion=FusionKind.LOG_LINEAR,
        cost=AnswerCost(model_us=321, price_micros=4500, request_bytes=389),
    )
    encoded = answer.encode()
    assert encoded[0] == 3
    assert Answer.decode(encoded) == answer
    # A version 2 body is the v3 one without the network fields.
    plain = _answer()
    v2 = b"\x02" + plain.encode()[1 : -(1 + 1 + 1 + 12)]
    decoded = Answer.decode(v2)
    assert (decoded.version, decoded.models, decoded.route_reason) == (
        2,
        (),
        RouteReason.SINGLE_MODEL,
    )
    with pytest.raises(ProtocolError, match="route reason"):
        Answer.decode(encoded[:-14] + Writer().u8(99).u8(1).getvalue() + encoded[-12:])


def test_pooling_fits_weights_that_beat_either_source() -> None:
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    y = rng.integers(0, c, n)

    def noisy(strength: float) -> np.ndarray:
        logits = rng.normal(size=(n, c))
        logits[np.arange(n), y] += strength
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    a, b = noisy(1.5), noisy(1.5)
    weights = fit_pooling_weights([a, b], y)
    assert all(w > 0.3 for w in weights)
    fused = pool([a, b], weights)
    assert np.allclose(fused.sum(axis=1), 1.0)
    accuracy = {
        k: float((p.argmax(1) == y).mean()) for k, p in {"a": a, "b": b, "f": fused}.items()
    }
    assert accuracy["f"] > max(accuracy["a"], accuracy["b"]) + 0.03


def test_specialist_expansion_keeps_outside_mass() -> None:
    local = np.asarray([0.1, 0.5, 0.3, 0.1])
    out = expand_specialist(np.asarray([0.2, 0.8]), (1, 2), local)
    assert np.allclose(out, [0.1, 0.16, 0.64, 0.1])


def test_router_budget_tolerance_exploration_and_learning() -> None:
    rng = np.random.default_rng(1)
    x = features(rng.dirichlet(np.ones(4), 200), rng.normal(size=(200, 8)))
    # Arm 0 is cheap and right half the time; arm 1 dear and always right.
    correct = np.stack([rng.random(200) < 0.5, np.ones(200, bool)], axis=1)
    prior = RouterPrior.fit(x, correct)
    prices = np.asarray([0.001, 0.004])
    ms = np.asarray([0.1, 0.4])
    router = MetaRouter(prior, prices=prices, model_ms=ms, settings=RouterSettings())
    assert router.choose(x[0], draw=0.99).arm == 1
    assert router.choose(x[0], draw=0.01).reason is RouteReason.EXPLORE
    budget = RouterSettings(max_price=0.002)
    capped = MetaRouter(prior, prices=prices, model_ms=ms, settings=budget)
    choice = capped.choose(x[0], draw=0.99)
    assert (choice.arm, choice.reason) == (0, RouteReason.OVER_BUDGET)
    # Lenient tolerance: the cheap arm is "near enough" to the best.
    lenient = MetaRouter(prior, prices=prices, model_ms=ms, settings=RouterSettings(tolerance=1.0))
    assert lenient.choose(x[0], draw=0.99).reason is RouteReason.CHEAPEST_NEAR_BEST
    assert (lenient.choose_batch(x) == 0).all()
    # Outcomes move the estimate: arm 1 keeps failing, arm 0 keeps succeeding.
    before = router.predict(x[0]).copy()
    for row in np.concatenate([x, x[:100]]):
        router.update(row, np.asarray([1.0, 0.0]))
    after = router.predict(x[0])
    assert after[0] > before[0] + 0.1
    assert after[1] < before[1] - 0.4
    assert router.choose(x[0], draw=0.99).arm == 0


def test_class_groups_fashion_names_and_confusion_merges() -> None:
    assert class_groups("fashion-mnist", 10, np.zeros(1, np.int64), np.zeros(1, np.int64))[
        "footwear"
    ] == (5, 7, 9)
    y = np.repeat(np.arange(6), 20)
    pred = y.copy()
    pred[::4] = np.asarray([1, 0, 3, 2, 5, 4])[y[::4]]  # 0<->1, 2<->3, 4<->5 confused
    assert sorted(class_groups("x", 6, pred, y).values()) == [(0, 1), (2, 3), (4, 5)]
    # No class is left alone (digits seed 2 once gave a one-class group), whatever the
    # confusions; every class is in exactly one group.
    y = np.repeat(np.arange(10), 30)
    for shift in range(1, 10):
        pred = y.copy()
        pred[::5] = (y[::5] + shift) % 10
        groups = list(class_groups("x", 10, pred, y).values())
        assert min(len(g) for g in groups) >= 2
        assert sorted(c for g in groups for c in g) == list(range(10))


def test_network_bundle_is_digest_checked(network_bundle: Path, tmp_path: Path) -> None:
    manifest = load_manifest(network_bundle)
    assert manifest.network is not None
    kinds = {m.kind for m in manifest.network.models}
    assert kinds == {"generalist", "small", "wide", "specialist"}
    assert len(manifest.network.models) >= 5
    prices = {m.kind: m.price_per_1k for m in manifest.network.models}
    assert prices["small"] < prices["generalist"] == 1.0 < prices["wide"]
    assert inspect_bundle(network_bundle, release_keys=[]).trusted
    copy = tmp_path / "copy"
    shutil.copytree(network_bundle, copy)
    spec = manifest.network.models[-1].file
    (copy / spec.path).write_bytes(verified_path(network_bundle, spec).read_bytes() + b"\0")
    verdict = inspect_bundle(copy, release_keys=[])
    assert not verdict.trusted
    assert spec.path in verdict.summary()


async def test_real_agent_answers_show_models_routes_and_fusion(
    network_bundle: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(network_bundle)
    assert manifest.network is not None
    names = {m.name for m in manifest.network.models}
    with np.load(verified_path(network_bundle, manifest.test_split)) as data:
        X = np.asarray(data["X"][:24], dtype=np.float32)
    config = write_config(
        tmp_path / "agent.toml", data_dir=tmp_path / "agent", bundle_dir=network_bundle
    )
    hub_args = ("--hub-models", MODELS, "--route-exploration", "0.25")
    async with (
        enrolled(tmp_path, network_bundle, free_port(), *hub_args) as hub,
        service("agent", agent_argv(config), log_dir=tmp_path) as agent,
        aiohttp.ClientSession() as http,
    ):
        url = f"{agent.url}/v2/models/{manifest.model_id}/infer"
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(X.shape),
                    "datatype": "FP32",
                    "data": X.ravel().tolist(),
                }
            ],
            "parameters": {"route": "hub"},
        }
        async with http.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            reply = await resp.json()
        async with http.get(hub.url + "/metrics") as resp:
            hub_metrics = await resp.text()
    params = reply["parameters"]
    outputs = {o["name"]: o["data"] for o in reply["outputs"]}
    # An unusual embedding is refused by the hub's poisoning checks (the quick bundle's
    # reference statistics come from 500 inputs), or kept local by the agent's own bands.
    hub_rows = [i for i, path in enumerate(outputs["path"]) if path == "escalated"]
    assert len(hub_rows) >= 20, (outputs["reason"], params["hub_errors"])
    refused = set(range(len(X))) - set(hub_rows)
    assert {params["hub_errors"][i] for i in refused} <= {"embedding_rejected", ""}
    assert {outputs["reason"][i] for i in refused} <= {"embedding_out_of_band", "hub_rejected"}
    assert [params["fusion"][i] for i in hub_rows] == ["log_linear"] * len(hub_rows)
    used = {m for i in hub_rows for m in params["hub_models"][i]}
    assert used <= names
    assert used
    reasons = [params["route_reasons"][i] for i in hub_rows]
    assert set(reasons) <= {r.name.lower() for r in RouteReason}
    assert "explore" in reasons
    assert set(reasons) - {"explore"}, "some answers are the router's own choice"
    costs = [params["hub_cost"][i] for i in hub_rows]
    assert all(c["price_micros"] > 0 and c["model_us"] > 0 for c in costs)
    assert all(c["request_bytes"] > 100 for c in costs)
    # An explored request ran every model: it costs more than any single arm's answer.
    explored = [c["price_micros"] for c, r in zip(costs, reasons, strict=True) if r == "explore"]
    chosen = [c["price_micros"] for c, r in zip(costs, reasons, strict=True) if r != "explore"]
    assert min(explored) > max(chosen)
    assert 'escalade_hub_routes_total{reason="explore"}' in hub_metrics
    # The fused answers are good answers: the labels match the test split mostly.
    with np.load(verified_path(network_bundle, manifest.test_split)) as data:
        y = np.asarray(data["y"][:24])
    assert float((np.asarray(outputs["label"])[hub_rows] == y[hub_rows]).mean()) >= 0.8
    # The hub flushed each answer's cost to its device's totals (on stopping, at the latest).
    device = DeviceIdentity.load(tmp_path / "agent").device_id
    store = Store.open(sqlite_url(tmp_path / "hub"))
    try:
        totals = device_cost_totals(store.engine, [device])[device]
    finally:
        store.close()
    assert totals.answers == len(hub_rows)
    assert totals.price_micros == sum(c["price_micros"] for c in costs)
    assert totals.request_bytes == sum(c["request_bytes"] for c in costs)


def _outcome() -> OutcomeRecord:
    return OutcomeRecord(
        record_id=uuid.uuid4(),
        at_ms=int(time.time() * 1000),
        model_id="digits",
        model_version=1,
        path=OutcomePath.ESCALATED,
        reason="uncertain",
        local_label=1,
        hub_label=1,
        signal=0.4,
        latency_us=900,
        hub_latency_us=800,
    )


async def test_device_costs_add_up_in_admin_stats(admin: Admin) -> None:
    status, raw = await admin.call("POST", "/enrollment-tokens", json={"uses": 2})
    token = TokenCreated.model_validate_json(raw).token
    paid, free = await admin.enroll(token), await admin.enroll(token)
    engine = admin.state.service.store.engine
    for device in (paid, free):
        store_outcomes(engine, device, [_outcome()])
    add_device_costs(engine, {paid: CostTotals(2, 300, 800, 2500)})
    add_device_costs(engine, {paid: CostTotals(1, 100, 400, 1500)})
    assert device_cost_totals(engine, [paid, free]) == {paid: CostTotals(3, 400, 1200, 4000)}
    status, raw = await admin.call("GET", "/stats/devices", token="read")
    assert status == 200, raw
    by_device = {s.device_id: s.cost for s in DeviceStatsPage.model_validate_json(raw).items}
    assert by_device[free] is None
    cost = by_device[paid]
    assert cost is not None
    assert (cost.answers, cost.model_ms, cost.request_bytes) == (3, 0.4, 1200)
    assert cost.price == pytest.approx(0.004)


def test_bench_network_policies_on_the_bundle(network_bundle: Path) -> None:
    manifest = load_manifest(network_bundle)
    runner = OnnxRunner(
        *(
            verified_path(network_bundle, a).read_bytes()
            for a in (manifest.encoder, manifest.head, manifest.hub)
        )
    )
    with np.load(verified_path(network_bundle, manifest.test_split)) as data:
        x, y = np.asarray(data["X"], np.float32), np.asarray(data["y"], np.int64)
    assert manifest.calibration_split is not None
    with np.load(verified_path(network_bundle, manifest.calibration_split)) as data:
        x_cal = np.asarray(data["X"], np.float32)
    embedding = runner.embed(x)
    seed = network_seed(
        network_bundle,
        manifest,
        local_test=runner.edge_probabilities(embedding),
        embedding_test=embedding,
        local_cal=runner.edge_probabilities(runner.embed(x_cal)),
        y_test=y,
        edge_ms=0.05,
        seed=0,
    )
    assert 0 < seed.mask.mean() <= 0.25
    report = network_report([seed], resamples=30, rtt_ms=40.0, network_ms=40.2)
    by_name = {p.name: p for p in report.policies}
    assert {"cascade", "fusion", "network", "oracle-arm", "arm:wide+specialist"} <= set(by_name)
    # The cascade's escalated answers are the generalist's: its delta to hub-only is the
    # edge's share only, and the oracle over arms is never below any arm.
    oracle = by_name["oracle-arm"].accuracy
    assert all(p.accuracy <= oracle + 1e-12 for p in report.policies)
    # Escalating a fifth of the inputs costs far less than the wide model for every input.
    assert by_name["network"].cost_vs_monolith < -0.5
    assert by_name["network"].latency_vs_monolith < -0.5
    assert 0 < report.router_cost_share_batched[0] < 1
    targets = {t.name: t for t in network_targets(report)}
    assert set(targets) >= {"network beats hub-only", "meta-router regret"}
    assert "pp" in targets["meta-router regret"].measured
    assert "| network |" in "\n".join(network_lines(report))
    # Seeds whose specialists differ (digits' groups come from each seed's confusions).
    renamed = {("other" if "specialist" in k else k): v for k, v in seed.model_costs.items()}
    both = network_report(
        [seed, dataclasses.replace(seed, model_costs=renamed)],
        resamples=10,
        rtt_ms=40.0,
        network_ms=40.2,
    )
    assert "other" in both.model_costs
    assert set(seed.model_costs) <= set(both.model_costs)


def test_local_probabilities_are_validated_and_optional(
    store: Store, bundle_dir: Path, clean_embedding: np.ndarray
) -> None:
    pipeline = EscalationPipeline(identity=HubIdentity.generate(), model=HubModel(bundle_dir))
    m = pipeline.manifest
    key = Ed25519PrivateKey.generate()
    token, _ = create_token(store)
    device_id = enroll(store, enroll_request(token, key))
    device = store.get_device(device_id)
    uniform = np.full(m.num_classes, 1 / m.num_classes, np.float32)

    def opened(probs: np.ndarray | None) -> Opened:
        header = envelope.EnvelopeHeader(
            device_id=device_id,
            model_id=m.model_id,
            model_version=m.model_version,
            seq=1,
            timestamp_ms=int(time.time() * 1000),
            nonce=uuid.uuid4().bytes,
            hub_key_id=pipeline.identity.key_id,
        )
        payload = envelope.EscalationPayload(
            Tensor.from_numpy(clean_embedding, m.wire_dtype),
            None if probs is None else Tensor.from_numpy(probs, "float32"),
        )
        body = envelope.seal(
            header,
            payload,
            device_key=key,
            hub_key=pipeline.identity.encryption_key.public_key(),
        )
        return pipeline.open_request(pipeline.inspect(body), device)

    assert opened(None).local_probs is None
    local = opened(uniform).local_probs
    assert local is not None
    assert np.allclose(local, uniform)
    bad = {
        ErrorCode.MALFORMED: uniform * 2,
        ErrorCode.BAD_TENSOR_SHAPE: uniform[:-1] / uniform[:-1].sum(),
        ErrorCode.NON_FINITE: np.where(np.arange(m.num_classes) == 0, np.nan, uniform),
    }
    for code, probs in bad.items():
        with pytest.raises(ProtocolError) as caught:
            opened(np.asarray(probs, np.float32))
        assert caught.value.code is code


def test_hub_models_flag_refuses_what_the_bundle_lacks(
    bundle_dir: Path, network_bundle: Path, tmp_path: Path
) -> None:
    def config(models: Path, names: tuple[str, ...]) -> HubConfig:
        return HubConfig(data_dir=tmp_path, models_dir=models, hub_models=names)

    with pytest.raises(HubError, match="no hub model network"):
        model_network(config(bundle_dir, ("generalist",)), HubModel(bundle_dir))
    with pytest.raises(HubError, match="no hub model 'huge'"):
        model_network(config(network_bundle, ("generalist", "huge")), HubModel(network_bundle))
    network = model_network(
        config(network_bundle, ("generalist", "small")), HubModel(network_bundle)
    )
    assert {a.name for a in network.arms} == {"generalist", "small"}
    assert set(network.models.models) == {"generalist", "small"}
