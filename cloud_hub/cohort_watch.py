"""Cohort checks at the hub: each device's mean embedding over a window of accepted messages,
compared with its peers (same profile; one hub serves one model) by a periodic sweep.

A device shifting every message by a small constant offset stays inside the per-message bands,
but its window mean moves by the whole offset. Devices legitimately differ (a camera that sees
mostly one class), so a flag goes to the audit log for an operator; it does not quarantine.
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

    def sweep(self) -> list[ProfileFlag]:
        """Compare each profile's qualifying devices, flag outliers, start new windows."""
        by_profile: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
        counts: dict[str, int] = {}
        for device_id, window in self._windows.items():
            if window.count >= self.min_messages:
                by_profile.setdefault(window.profile, {})[str(device_id)] = (
                    window.total / window.count
                )
                counts[window.profile] = min(counts.get(window.profile, window.count), window.count)
        flags: list[ProfileFlag] = []
        for profile, means in by_profile.items():
            if len(means) < self.min_devices:
                continue
            threshold = self.spread_factor * math.sqrt(self.stats.dim / counts[profile])
            flags.extend(
                ProfileFlag(profile, flag) for flag in cohort_outliers(means, self.stats, threshold)
            )
            for key in means:
                self._windows.pop(uuid.UUID(key), None)
        return flags
