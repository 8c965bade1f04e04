"""Per-device reputation at the hub: the pure CUSUM (`cloud_hub.poisoning.reputation`) kept in
memory per device, seeded from the database and written back only while it moves.

Honest devices sit at CUSUM 0, so they cost no database writes; a device whose scores drift
is written on every message until it is quarantined. Entries are keyed by the device's status
generation: after an operator's release (a new generation) the hub starts from the database's
cleared value instead of the suspicion it held in memory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cloud_hub.poisoning import CheckResult, Reputation, ReputationParams, update
from cloud_hub.store import Device


@dataclass(frozen=True, slots=True)
class Observation:
    reputation: Reputation
    # The CUSUM changed and should be written back.
    persist: bool
    # This message took the device over the limit: quarantine it now.
    quarantine: bool


class ReputationBook:
    def __init__(self, params: ReputationParams | None = None) -> None:
        self.params = params or ReputationParams()
        self._entries: dict[uuid.UUID, tuple[int, Reputation]] = {}

    def observe(self, device: Device, result: CheckResult) -> Observation:
        entry = self._entries.get(device.device_id)
        if entry is None or entry[0] != device.generation:
            before = Reputation(cusum=device.cusum)
        else:
            before = entry[1]
        after = update(before, result, self.params)
        self._entries[device.device_id] = (device.generation, after)
        return Observation(
            reputation=after,
            persist=after.cusum != before.cusum,
            quarantine=before.state == "active" and after.state == "quarantined",
        )

    def forget(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
