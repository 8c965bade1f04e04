"""Per-device reputation at the hub: the CUSUM of `cloud_hub.poisoning.reputation`, kept in
memory per device, seeded from the database, and written back behind the answers.

Entries are keyed by the device's status generation: after an operator's release (a new
generation) the hub starts from the database's cleared value instead of the suspicion it held
in memory. A moved CUSUM is marked dirty and written by a periodic flush, never on the
request's path: 18% of honest requests nudge their device's CUSUM, and waiting for that UPDATE
before answering cost more than the record itself. A crash loses at most one flush interval of
CUSUM movement (never a quarantine: that is written before the next message is judged).
Used on the event loop only.
"""

from __future__ import annotations

import uuid

from cloud_hub.poisoning import Reputation, ReputationParams
from cloud_hub.store import Device, SavedReputation


class ReputationBook:
    def __init__(self, params: ReputationParams | None = None) -> None:
        self.params = params or ReputationParams()
        self._entries: dict[uuid.UUID, tuple[int, Reputation]] = {}
        self._dirty: dict[uuid.UUID, SavedReputation] = {}

    def current(self, device: Device) -> Reputation | None:
        """The in-memory reputation for the device's generation, or None (start from the DB)."""
        entry = self._entries.get(device.device_id)
        if entry is None or entry[0] != device.generation:
            return None
        return entry[1]

    def remember(self, device: Device, reputation: Reputation, *, persist: bool) -> None:
        self._entries[device.device_id] = (device.generation, reputation)
        if persist:
            self._dirty[device.device_id] = SavedReputation(
                device.device_id, device.generation, reputation.cusum
            )

    def forget(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
        self._dirty.pop(device_id, None)

    def drain(self) -> list[SavedReputation]:
        """The CUSUMs to write back since the last drain (the caller writes them)."""
        pending, self._dirty = list(self._dirty.values()), {}
        return pending

    def restore(self, pending: list[SavedReputation]) -> None:
        """Mark CUSUMs dirty again after a failed write, unless a newer value is pending."""
        for item in pending:
            self._dirty.setdefault(item.device_id, item)
