"""Cohort checks over windowed mean embeddings of devices that share a profile and model. Pure.

A per-message check sees one vector; a device that shifts every message by a small, constant
offset stays inside the bands, but its window mean moves by the whole offset while the noise
in a mean of n messages shrinks by sqrt(n). Distances are whitened with the reference
precision, so they are in units of the clean spread.

Two flags:
- "fleet_outlier": a device's mean is far from the fleet's centre, a coordinate-wise median of
  one point per device (`robust.py`: k colluders move it by at most `influence_bound`);
- "collusion": two or more devices whose means are far from *honest hub traffic* and close to
  each other: a group pushing the same way, which would also drag the fleet centre along.

Honest hub traffic is not the reference mean: the hub only sees what routers escalate, and the
harder the inputs a device escalates, the further its mean moves toward the mean of escalated
inputs (`hard_mean`, measured at build time). So "far" is measured from the segment between
the reference mean and `hard_mean`, and beyond an `allowance` for the spread honest
sub-populations show besides (noisier or dimmer inputs): without both, a fleet of honest devices
that escalate only hard inputs was flagged as colluding, 5 of 5, once windows grew long.

What it cannot flag: a group pushing along that segment, or by less than the allowance; a
majority of the fleet moving together is a "collusion" only if it leaves honest traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.reference import ReferenceStats
from cloud_hub.poisoning.robust import trimmed_mean

Reason = Literal["fleet_outlier", "collusion"]
F64 = NDArray[np.float64]

# Whitened units. On digits, honest sub-populations (pixel noise x1-x4, inputs 10% dimmer,
# hard inputs only) put their window means 0.3-0.9 off the easy-to-hard segment; a class offset
# of 0.6 (the `class_offset` attack) moves a mean by ~2.
DEFAULT_ALLOWANCE = 1.0


@dataclass(frozen=True, slots=True)
class CohortFlag:
    device_id: str
    reason: Reason
    distance: float  # whitened distance from the fleet centre (outlier) or honest traffic (group)
    group: tuple[str, ...] = ()  # the devices moving together, for "collusion"


def distance_from_segment(z: F64, start: F64, end: F64) -> F64:
    """Each row's distance to the nearest point of the segment [start, end]."""
    span = end - start
    length = float(span @ span)
    if length == 0:
        return np.asarray(np.linalg.norm(z - start, axis=1), np.float64)
    t = np.clip((z - start) @ span / length, 0.0, 1.0)
    return np.asarray(np.linalg.norm(z - start - t[:, None] * span, axis=1), np.float64)


def cohort_outliers(
    window_means: Mapping[str, NDArray[np.floating]],
    stats: ReferenceStats,
    threshold: float,
    *,
    min_group: int = 2,
    allowance: float = DEFAULT_ALLOWANCE,
) -> list[CohortFlag]:
    """Flag devices whose window means stand apart from the fleet or move together.

    `threshold` is a whitened distance; for windows of n messages of clean traffic a mean's
    distance from the true centre is about sqrt(d / n), so pick it for the window length. A
    device counts as far when it lies beyond sqrt(threshold^2 + allowance^2): the noise of a
    window mean and the spread between honest sub-populations, added in quadrature.
    A colluding group is `min_group` or more devices each far from honest traffic whose pairwise
    distances are below `threshold`.
    """
    ids = sorted(window_means)
    if not ids:
        return []
    w = stats.whitening
    z = np.stack([w @ np.asarray(window_means[i], dtype=np.float64) for i in ids])
    far_limit = float(np.hypot(threshold, allowance))
    from_fleet = np.linalg.norm(z - trimmed_mean(z), axis=1)
    hard = stats.mean if stats.hard_mean is None else stats.hard_mean
    from_honest = distance_from_segment(z, w @ stats.mean, w @ hard)
    flags = [
        CohortFlag(ids[i], "fleet_outlier", float(from_fleet[i]))
        for i in np.flatnonzero(from_fleet > far_limit)
    ]
    # Groups: connected components of "far from honest traffic" devices within `threshold`.
    far = np.flatnonzero(from_honest > far_limit)
    pairwise = np.linalg.norm(z[far, None, :] - z[None, far, :], axis=2) < threshold
    unseen = set(range(len(far)))
    while unseen:
        stack, component = [unseen.pop()], []
        while stack:
            j = stack.pop()
            component.append(j)
            linked = [int(k) for k in np.flatnonzero(pairwise[j]) if k in unseen]
            unseen.difference_update(linked)
            stack.extend(linked)
        if len(component) >= min_group:
            group = tuple(sorted(ids[far[j]] for j in component))
            flags.extend(
                CohortFlag(ids[far[j]], "collusion", float(from_honest[far[j]]), group)
                for j in sorted(component)
            )
    return flags
