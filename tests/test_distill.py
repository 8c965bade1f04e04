"""The closed loop's pure core: the per-device capped distillation set, the student trainer,
and staging as a signed bundle that part A's checks and the agent's warm-up accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import test_rollouts_e2e as rollouts
from agent_stack import infer, until
from rollout_bundles import signed_copy

from cloud_hub.distill import DistillSample, DistillSet
from edge_agent.bundle_update.health import load_checked
from edge_agent.profile import load_profile
from escalade.modelbuild.distill import stage_bundle, train_head
from escalade.modelbuild.evaluate import OnnxRunner
from escalade.modelbuild.layers import Classifier
from escalade_protocol.artifacts import RouterCalibration, load_manifest, verified_path
from escalade_protocol.bundles import BundleRefused, inspect_bundle, require_trusted
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey


def _sample(device: str, i: int) -> DistillSample:
    return DistillSample(device, np.full(3, i, np.float32), i % 2)


def test_each_device_counts_at_most_the_median_device() -> None:
    dataset = DistillSet()
    for device, count in {"a": 4, "b": 5, "c": 6, "flood": 500}.items():
        for i in range(count):
            assert dataset.offer(_sample(device, i), device_active=True, check_passed=True)
    # Median of (4, 5, 6, 500) per-device counts: 5.5, so no device keeps more than 6.
    assert dataset.cap() == 6
    x, y, kept = dataset.arrays()
    assert kept == {"a": 4, "b": 5, "c": 6, "flood": 6}
    assert x.shape == (21, 3)
    assert y.shape == (21,)
    # The flood's 6 are drawn from all of its samples, not its latest burst.
    flood = x[-6:, 0]
    assert flood.min() < 250 < flood.max()


def test_failed_checks_and_inactive_devices_are_not_admitted() -> None:
    dataset = DistillSet()
    assert not dataset.offer(_sample("q", 0), device_active=False, check_passed=True)
    assert not dataset.offer(_sample("a", 0), device_active=True, check_passed=False)
    assert dataset.offer(_sample("a", 1), device_active=True, check_passed=True)
    assert dataset.refused == 2
    x, _, kept = dataset.arrays()
    assert kept == {"a": 1}
    assert len(x) == 1
    assert DistillSet().arrays()[0].shape[0] == 0


def _distilled(bundle_dir: Path) -> tuple[Classifier, RouterCalibration, float]:
    """A student on half the calibration split plus the hub's labels on it; its accuracy on
    the other half."""
    manifest = load_manifest(bundle_dir)
    runner = OnnxRunner(
        *(
            verified_path(bundle_dir, a).read_bytes()
            for a in (manifest.encoder, manifest.head, manifest.hub)
        )
    )
    assert manifest.calibration_split is not None
    with np.load(verified_path(bundle_dir, manifest.calibration_split)) as data:
        x, y = data["X"].astype(np.float32), data["y"].astype(np.int64)
    half = len(x) // 2
    e = runner.embed(x)
    hub_labels = runner.hub_probabilities(e).argmax(axis=1).astype(np.int64)
    cal = (e[half:], y[half:], runner.hub_probabilities(e[half:]))
    head, router = train_head(
        (e[:half], y[:half]), (e[:half], hub_labels[:half]), cal, num_classes=10, seed=0
    )
    accuracy = float((head.probabilities(e[half:]).argmax(axis=1) == y[half:]).mean())
    return head, router, accuracy


@pytest.mark.timeout(300)  # the session's bundle build, on a shared machine
def test_a_distilled_head_is_staged_signed_and_passes_the_agents_warmup(
    bundle_dir: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(bundle_dir)
    head, router, accuracy = _distilled(bundle_dir)
    assert 0 < router.threshold < 1
    assert accuracy > 0.85

    key = Ed25519PrivateKey.generate()
    staged = stage_bundle(bundle_dir, head, router, tmp_path / "staged", key)
    assert staged.head.sha256 != manifest.head.sha256
    assert staged.encoder == manifest.encoder
    assert staged.model_version == manifest.model_version
    digest, _ = require_trusted(
        inspect_bundle(tmp_path / "staged", release_keys=[key.public_key()])
    )
    assert len(digest) == 64
    runtime = load_checked(
        tmp_path / "staged", load_profile("x86-64-cpu"), data_dir=tmp_path, running=manifest
    )
    assert runtime.manifest.router == router
    with pytest.raises(BundleRefused) as refused:
        require_trusted(
            inspect_bundle(
                tmp_path / "staged", release_keys=[Ed25519PrivateKey.generate().public_key()]
            )
        )
    assert refused.value.code is ErrorCode.BUNDLE_UNTRUSTED_KEY


@pytest.mark.timeout(300)
async def test_a_staged_distilled_bundle_rolls_out_to_real_agents(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The loop's last step: the staged bundle, uploaded and rolled out through the admin API,
    becomes what both real agent processes run."""
    v1 = signed_copy(bundle_dir, tmp_path / "v1", rollouts.RELEASE)
    head, router, _ = _distilled(v1)
    stage_bundle(v1, head, router, tmp_path / "distilled", rollouts.RELEASE)
    staged = rollouts.digest_of(tmp_path / "distilled")
    async with rollouts.fleet_of_two(tmp_path, v1) as fleet:
        await fleet.wait_bundle("current", rollouts.digest_of(v1))
        assert await fleet.upload(tmp_path / "distilled") == staged
        await fleet.curl("POST", "/rollouts", {"bundle_digest": staged, "percent": 100})

        async def swapped() -> bool:
            return all(
                h.bundle is not None and h.bundle.digest == staged for h in await fleet.healths()
            )

        await until(swapped, timeout_s=60, what="agents serving the distilled bundle")
        # Its first answers are on probation: answer a few, then it is current.
        with np.load(v1 / "test.npz") as data:
            inputs = np.asarray(data["X"][:12], dtype=np.float32)
        for agent in fleet.agents:
            for row in inputs:
                answer = await infer(fleet.http, agent.url, [float(v) for v in row], "local")
                assert answer.source == "local"
        await fleet.wait_bundle("current", staged)
        for h in await fleet.healths():
            assert h.bundle is not None
            assert h.bundle.failed == []
