"""The distillation set with bounded influence per device.

A device's weight in the set is capped as every fleet aggregate caps it (robust.py: one
point's worth per device): here each device keeps at most `cap` samples, the coordinate-wise
median (`trimmed_mean` at the median trim) of the per-device counts, so a device that escalates
a hundred times more than its peers counts as much as a typical one, and k colluding devices
hold at most k * cap samples however much they send. Only answers that passed the hub's
poisoning checks, from devices that were active (not quarantined, not revoked), are admitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from cloud_hub.poisoning.robust import trimmed_mean

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DistillSample:
    device_id: str
    embedding: F32  # as the hub received it, in its model's space (adapted if it was)
    label: int  # the hub's answer


@dataclass(slots=True)
class DistillSet:
    # Admitted samples per device, in arrival order.
    by_device: dict[str, list[DistillSample]] = field(default_factory=dict)
    refused: int = 0

    def offer(self, sample: DistillSample, *, device_active: bool, check_passed: bool) -> bool:
        """Admit `sample` when its device is in good standing and its check passed."""
        if not (device_active and check_passed):
            self.refused += 1
            return False
        self.by_device.setdefault(sample.device_id, []).append(sample)
        return True

    def cap(self) -> int:
        """The most samples any one device contributes: the median per-device count."""
        counts = np.array([[len(s)] for s in self.by_device.values()], np.float64)
        if len(counts) == 0:
            return 0
        return max(1, math.ceil(float(trimmed_mean(counts)[0])))

    def arrays(self, *, seed: int = 0) -> tuple[F32, I64, dict[str, int]]:
        """(embeddings, labels, samples kept per device), each device's share capped.

        A device over the cap keeps a random subset (seeded): its latest answers are not
        privileged over its earlier ones, so timing a burst buys nothing."""
        cap = self.cap()
        rng = np.random.default_rng(seed)
        rows: list[F32] = []
        labels: list[int] = []
        kept: dict[str, int] = {}
        for device_id in sorted(self.by_device):
            samples = self.by_device[device_id]
            chosen = (
                range(len(samples))
                if len(samples) <= cap
                else sorted(rng.choice(len(samples), cap, replace=False))
            )
            for i in chosen:
                rows.append(samples[i].embedding)
                labels.append(samples[i].label)
            kept[device_id] = len(chosen)
        if not rows:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), kept
        return np.stack(rows).astype(np.float32), np.array(labels, np.int64), kept
