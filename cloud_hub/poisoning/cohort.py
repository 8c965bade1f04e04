"""Cohort checks over windowed mean embeddings of devices that share a profile and model. Pure.

A per-message check sees one vector; a device that shifts every message by a small, constant
offset stays inside the bands, but its window mean moves by the whole offset while the noise
in a mean of n messages shrinks by sqrt(n). Distances are whitened with the reference
precision, so they are in units of the clean spread.

Two flags:
- "fleet_outlier": a device's mean is far from the coordinate-wise median of the fleet's means
  (robust while fewer than half the devices are compromised);
- "collusion": several devices whose means are far from the *reference* mean and close to each
  other: a group pushing the same way, which would also drag the fleet median along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.reference import ReferenceStats

Reason = Literal["fleet_outlier", "collusion"]


@dataclass(frozen=True, slots=True)
class CohortFlag:
    device_id: str
    reason: Reason
    distance: float  # whitened distance from the fleet median (outlier) or reference (group)
    group: tuple[str, ...] = ()  # the devices moving together, for "collusion"


def cohort_outliers(
    window_means: Mapping[str, NDArray[np.floating]],
    stats: ReferenceStats,
    threshold: float,
    *,
    min_group: int = 3,
) -> list[CohortFlag]:
    """Flag devices whose window means stand apart from the fleet or move together.

    `threshold` is a whitened distance; for windows of n messages of clean traffic a mean's
    distance from the true centre is about sqrt(d / n), so pick it for the window length.
    A colluding group is `min_group` or more devices each beyond `threshold` from the reference
    mean whose pairwise distances are below `threshold`.
    """
    ids = sorted(window_means)
    if not ids:
        return []
    w = stats.whitening
    z = np.stack([w @ np.asarray(window_means[i], dtype=np.float64) for i in ids])
    median = np.median(z, axis=0)
    from_fleet = np.linalg.norm(z - median, axis=1)
    from_reference = np.linalg.norm(z - w @ stats.mean, axis=1)
    flags = [
        CohortFlag(ids[i], "fleet_outlier", float(from_fleet[i]))
        for i in np.flatnonzero(from_fleet > threshold)
    ]
    # Groups: connected components of "far from the reference" devices within `threshold`.
    far = np.flatnonzero(from_reference > threshold)
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
                CohortFlag(ids[far[j]], "collusion", float(from_reference[far[j]]), group)
                for j in sorted(component)
            )
    return flags
