"""Following the hub's bundle rollouts: learn the assignment, fetch, check, warm up, swap,
roll back (pure decisions in `core`, the I/O in `shell`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.bundle_update.shell import BundleUpdater, UpdaterSettings, installed_digest
from edge_agent.errors import AgentError
from escalade_protocol.artifacts import BundleError
from escalade_protocol.bundles import parse_release_keys

if TYPE_CHECKING:
    from edge_agent.api import AgentState


def start_bundle_updates(state: AgentState) -> BundleUpdater | None:
    """The updater for `state` (set as ``state.bundles``), or None when turned off."""
    config = state.config
    if config.bundle_check_s <= 0:
        return None
    try:
        keys = parse_release_keys(config.release_keys)
    except BundleError as exc:
        raise AgentError(f"release_keys: {exc}") from None
    settings = UpdaterSettings(keys, config.bundle_check_s, config.bundle_probation)
    state.bundles = BundleUpdater(state, settings)
    return state.bundles


__all__ = ["BundleUpdater", "UpdaterSettings", "installed_digest", "start_bundle_updates"]
