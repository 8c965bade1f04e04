"""The closed loop's pure core: the per-device capped distillation set, the student trainer,
and staging as a signed bundle that part A's checks and the agent's warm-up accept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_hub.distill import DistillSample, DistillSet
from edge_agent.bundle_update.health import load_checked
from edge_agent.profile import load_profile
from escalade.modelbuild.distill import stage_bundle, train_head
from escalade.modelbuild.evaluate import OnnxRunner
from escalade_protocol.artifacts import load_manifest, verified_path
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


@pytest.mark.timeout(300)  # the session's bundle build, on a shared machine
def test_a_distilled_head_is_staged_signed_and_passes_the_agents_warmup(
    bundle_dir: Path, tmp_path: Path
) -> None:
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
    assert 0 < router.threshold < 1
    assert (head.probabilities(e[half:]).argmax(axis=1) == y[half:]).mean() > 0.85

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
