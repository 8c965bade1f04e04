"""Cohort checks at the hub: each device's mean embedding over a window of accepted messages,
compared with its peers (same profile; one hub serves one model) by a periodic sweep.

A device shifting every message by a small constant offset stays inside the per-message bands,
but its window mean moves by the whole offset. Devices legitimately differ (a camera that sees
mostly one class), so a flag goes to the audit log for an operator; it does not quarantine.

Two halves, so that no window is read on one thread while another adds to it: `observe` and
`take_due` run on the event loop (taking a profile's qualifying windows out and starting new
ones is a few dict operations); `sweep` is pure over what was taken and runs anywhere.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cloud_hub.poisoning import CohortFlag, ReferenceStats, cohort_outliers


@dataclass(slots=True)
class _Window:
    profile: str
    total: npt.NDArray[np.float64]
    count: int = 0


@dataclass(frozen=True, slots=True)
class ProfileFlag:
    profile: str
    flag: CohortFlag


@dataclass(frozen=True, slots=True)
class DueProfile:
    """One profile's qualifying windows, taken out of the watch: device -> window mean."""

    profile: str
    means: dict[str, npt.NDArray[np.float64]]
    # The fewest messages behind any of these means (sets the threshold).
    min_count: int


@dataclass(slots=True)
class CohortWatch:
    stats: ReferenceStats
    # A device's mean counts once it holds this many messages.
    min_messages: int = 50
    # A profile is compared once this many devices qualify (a median needs a fleet).
    min_devices: int = 5
    # Threshold in whitened units, as a multiple of the spread of a clean window mean,
    # sqrt(d / n): generous, since devices see different mixes of classes.
    spread_factor: float = 3.0
    _windows: dict[uuid.UUID, _Window] = field(default_factory=dict)

    def observe(
        self, device_id: uuid.UUID, profile: str, embedding: npt.NDArray[np.float32]
    ) -> None:
        window = self._windows.get(device_id)
        if window is None:
            window = self._windows[device_id] = _Window(profile, np.zeros(self.stats.dim))
        window.total += embedding
        window.count += 1

    def take_due(self) -> list[DueProfile]:
        """Take out the windows of every profile with enough qualifying devices; their devices
        start new windows. Cheap: no linear algebra, so it runs on the loop."""
        qualifying: dict[str, list[uuid.UUID]] = {}
        for device_id, window in self._windows.items():
            if window.count >= self.min_messages:
                qualifying.setdefault(window.profile, []).append(device_id)
        due: list[DueProfile] = []
        for profile, device_ids in qualifying.items():
            if len(device_ids) < self.min_devices:
                continue
            windows = [self._windows.pop(device_id) for device_id in device_ids]
            due.append(
                DueProfile(
                    profile=profile,
                    means={
                        str(d): w.total / w.count for d, w in zip(device_ids, windows, strict=True)
                    },
                    min_count=min(w.count for w in windows),
                )
            )
        return due

    def sweep_due(self, due: list[DueProfile]) -> list[ProfileFlag]:
        """Compare each taken profile's devices and flag the outliers. Pure."""
        flags: list[ProfileFlag] = []
        for item in due:
            threshold = self.spread_factor * math.sqrt(self.stats.dim / item.min_count)
            flags.extend(
                ProfileFlag(item.profile, flag)
                for flag in cohort_outliers(item.means, self.stats, threshold)
            )
        return flags

    def sweep(self) -> list[ProfileFlag]:
        """Take and compare in one step (single-threaded callers: tools and tests)."""
        return self.sweep_due(self.take_due())
