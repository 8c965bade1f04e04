"""Adapters v2 -> v1: fitting, shipping in a signed bundle, and serving a v2 device through a
real hub process (its v1 model and an adapter) from a real agent process running v2."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from cloud_hub.adapters import ModelRoutes
from cloud_hub.poisoning import EmbeddingChecker
from cloud_hub.serving import HubModel
from escalade.demo import infer
from escalade.modelbuild import build_bundle
from escalade.modelbuild.adapter import QUICK, adapt_bundle, fit_adapter, run_adapter
from escalade.modelbuild.layers import wire_round
from escalade.modelbuild.onnx_export import encoder_model, serialize
from escalade.procs import agent_command, enroll_agent, hub_command, migrate_hub, service
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.bundles import inspect_bundle, sign_bundle, write_release_key
from escalade_protocol.bundles._keys import load_release_private
from escalade_protocol.errors import ErrorCode, ProtocolError

# Two bundle builds and an adapter fit in the fixtures: ~30 s alone, more on a shared machine.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same task, a new (nonlinear, 10-wide) encoder: version 2."""
    out = tmp_path_factory.mktemp("v2")
    build_bundle("digits", out, seed=0, encoder_kind="mlp", model_version=2)
    return out


@pytest.fixture(scope="module")
def adapted_dir(
    bundle_dir: Path, v2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """v1's bundle with a (quick) MLP adapter from v2, signed; and the release public key."""
    root = tmp_path_factory.mktemp("adapted")
    out = root / "bundle"
    adapt_bundle(bundle_dir, v2_dir, out, kind="mlp", config=QUICK)
    pub, _ = write_release_key(root / "release.key")
    sign_bundle(out, load_release_private(root / "release.key"))
    return out, pub


def test_a_linear_map_is_recovered_exactly_by_the_linear_adapter() -> None:
    rng = np.random.default_rng(0)
    source = rng.standard_normal((400, 6)).astype(np.float32)
    a = rng.standard_normal((6, 4))
    target = (source @ a + 0.5).astype(np.float32)
    model = serialize(encoder_model(fit_adapter(source, target, "linear"), "t"))
    assert np.abs(run_adapter(model, source) - target).max() < 1e-2


def test_the_mlp_adapter_fits_a_nonlinear_map_better_than_linear() -> None:
    rng = np.random.default_rng(1)
    source = rng.standard_normal((2000, 4)).astype(np.float32)
    target = np.concatenate([np.abs(source), source[:, :1]], axis=1).astype(np.float32)
    errors = {}
    for kind in ("linear", "mlp"):
        model = serialize(encoder_model(fit_adapter(source, target, kind, config=QUICK), kind))
        errors[kind] = float(((run_adapter(model, source) - target) ** 2).mean())
    assert errors["mlp"] < errors["linear"] / 3


def test_the_adapter_is_listed_signed_and_digest_checked(adapted_dir: tuple[Path, Path]) -> None:
    bundle, pub = adapted_dir
    manifest = load_manifest(bundle)
    (entry,) = manifest.adapters
    assert (entry.source_model_id, entry.source_model_version) == ("digits-mlp10", 2)
    assert entry.metrics is not None
    # A quick adapter, still far better than chance and near the retrained hub.
    assert entry.metrics.adapted_hub_accuracy > entry.metrics.retrained_hub_accuracy - 0.05
    from escalade_protocol.bundles import parse_release_keys

    keys = parse_release_keys([str(pub)])
    assert inspect_bundle(bundle, release_keys=keys).trusted
    # A swapped adapter is refused like any other file of the bundle.
    adapter = bundle / entry.model.path
    original = adapter.read_bytes()
    try:
        adapter.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        verdict = inspect_bundle(bundle, release_keys=keys)
        assert [f.code for f in verdict.failures] == [ErrorCode.BUNDLE_DIGEST_MISMATCH]
        assert entry.model.path in verdict.failures[0].detail
    finally:
        adapter.write_bytes(original)


def test_routes_select_by_model_version_and_adapted_embeddings_pass_their_checks(
    adapted_dir: tuple[Path, Path], v2_dir: Path
) -> None:
    bundle, _ = adapted_dir
    model = HubModel(bundle)
    routes = ModelRoutes(bundle, model.manifest, EmbeddingChecker(model.reference))
    native = routes.select("digits-pca32", 1)
    assert native.session is None
    route = routes.select("digits-mlp10", 2)
    assert (route.embedding_dim, route.kind) == (10, "mlp")
    with pytest.raises(ProtocolError) as refused:
        routes.select("digits-mlp10", 3)
    assert refused.value.code is ErrorCode.UNKNOWN_MODEL
    assert "digits-mlp10 v2" in refused.value.message
    assert [a.model_version for a in routes.adapted()] == [2]

    v2 = load_manifest(v2_dir)
    with np.load(verified_path(v2_dir, v2.test_split)) as data:
        x, y = data["X"].astype(np.float32), data["y"]
    from escalade.modelbuild.adapter import BundleGraphs

    source = wire_round(BundleGraphs.load(v2_dir).embed(x))
    adapted = np.stack([route.adapt(row) for row in source])
    labels = model.predict_batch(adapted).argmax(axis=1)
    assert (labels == y).mean() > 0.9
    passed = [route.checker.check(e, int(c)).passed for e, c in zip(adapted, labels, strict=True)]
    # Bands set for a 1% false-positive rate on adapted clean embeddings.
    assert np.mean(passed) > 0.95
    # The native checks do not describe adapted embeddings: a sign flip is still caught.
    assert not route.checker.check(-adapted[0] * 3, int(labels[0])).passed


def test_adapt_cli_refuses_two_copies_of_one_version_in_one_line(
    bundle_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "escalade.cli", "models", "adapt"),
            *("--from", str(bundle_dir), "--to", str(bundle_dir), "--out", str(tmp_path / "o")),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "code": "adapt_failed",
        "error": "both bundles are digits-pca32 v1",
    }


async def test_a_v2_agent_is_answered_by_a_v1_hub_through_the_adapter(
    adapted_dir: tuple[Path, Path], v2_dir: Path, tmp_path: Path
) -> None:
    bundle, _ = adapted_dir
    v2 = load_manifest(v2_dir)
    with np.load(verified_path(v2_dir, v2.test_split)) as data:
        x, y = data["X"].astype(np.float32)[:30], data["y"][:30]
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    await migrate_hub(hub_dir)
    async with service(
        "hub", hub_command(hub_dir, bundle, "--allow-simulated-tee"), log_dir=tmp_path
    ) as hub:
        await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        argv = [*agent_command(agent_dir, v2_dir), "--allow-simulated-tee"]
        async with service("agent", argv, log_dir=tmp_path) as agent, aiohttp.ClientSession() as h:
            answers = [(await infer(h, agent.url, row, "hub")).response for row in x]
    assert all(a.source == "hub" for a in answers), {a.reason for a in answers}
    assert all(a.model_version == 2 for a in answers)
    correct = np.mean([a.hub_label == label for a, label in zip(answers, y, strict=True)])
    assert correct >= 0.9
    db = sqlite3.connect(hub_dir / "hub.db")
    try:
        rows = db.execute("select model_id, model_version from escalations").fetchall()
    finally:
        db.close()
    assert len(rows) == len(answers)
    assert set(rows) == {("digits-mlp10", 2)}
