"""Rollouts of signed bundles: the pure assignment core, the bundle shelf on disk and the
routes devices download bundles from."""

from cloud_hub.rollouts.assign import (
    BUCKETS,
    LADDER,
    AutoAdvance,
    Rollout,
    RolloutState,
    advanced,
    assignment,
    bucket,
    covers,
)

__all__ = [
    "BUCKETS",
    "LADDER",
    "AutoAdvance",
    "Rollout",
    "RolloutState",
    "advanced",
    "assignment",
    "bucket",
    "covers",
]
