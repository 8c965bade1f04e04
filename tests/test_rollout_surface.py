"""The public surface of the rollout packages: what hub and agent code import, nothing private."""

from __future__ import annotations

import cloud_hub.rollouts
import edge_agent.bundle_update
from escalade_protocol import bundles


def test_rollout_packages_export_what_they_mean_to() -> None:
    assert set(cloud_hub.rollouts.__all__) == {
        "BUCKETS", "LADDER", "AutoAdvance", "Rollout", "RolloutState",
        "advanced", "assignment", "bucket", "covers",
    }  # fmt: skip
    assert set(edge_agent.bundle_update.__all__) == {
        "BundleUpdater", "UpdaterSettings", "installed_digest", "start_bundle_updates",
    }  # fmt: skip
    for module in (cloud_hub.rollouts, edge_agent.bundle_update, bundles):
        assert all(hasattr(module, name) for name in module.__all__)
        assert not [name for name in module.__all__ if name.startswith("_")]
