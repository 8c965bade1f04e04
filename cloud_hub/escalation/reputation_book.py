"""Per-device reputation at the hub: the CUSUM of `cloud_hub.poisoning.reputation`, kept in
memory per device, seeded from the database, and merged back behind the answers.

Entries are keyed by the device's status generation: after an operator's release (a new
generation) the hub starts from the database's cleared value instead of the suspicion it held
in memory. A moved CUSUM is marked dirty and written by a periodic flush, never on the
request's path: 18% of honest requests nudge their device's CUSUM, and waiting for that UPDATE
before answering cost more than the record itself. A crash loses at most one flush interval of
CUSUM movement (never a quarantine: that is written before the next message is judged).

Replicas sharing the database each see part of a device's traffic, so a flush writes not this
hub's value but its movement since the last flush (`cusum = clamp(cusum + delta)` in one
UPDATE) and reads back the merged value: what other replicas added since is folded into the
entry here. A device spreading its messages over n replicas therefore builds one CUSUM, not n
small ones, within one flush interval. Used on the event loop only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cloud_hub.poisoning import Reputation, ReputationParams
from cloud_hub.store import Device, SavedReputation


@dataclass(slots=True)
class _Entry:
    generation: int
    reputation: Reputation
    # The CUSUM this hub last agreed on with the database; the movement since is its delta.
    synced: float


class ReputationBook:
    def __init__(self, params: ReputationParams | None = None) -> None:
        self.params = params or ReputationParams()
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._dirty: set[uuid.UUID] = set()

    def current(self, device: Device) -> Reputation | None:
        """The in-memory reputation for the device's generation, or None (start from the DB)."""
        entry = self._entries.get(device.device_id)
        if entry is None or entry.generation != device.generation:
            return None
        return entry.reputation

    def remember(self, device: Device, reputation: Reputation, *, persist: bool) -> None:
        entry = self._entries.get(device.device_id)
        if entry is None or entry.generation != device.generation:
            # Judged from the database's value (`current` gave None): that is the common base.
            entry = self._entries[device.device_id] = _Entry(
                device.generation, reputation, device.cusum
            )
        entry.reputation = reputation
        if persist:
            self._dirty.add(device.device_id)

    def forget(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
        self._dirty.discard(device_id)

    def drain(self) -> list[SavedReputation]:
        """The CUSUM movements to merge since the last drain (the caller writes them, then
        hands the merged values to `merged`, or the same list to `restore` on failure)."""
        pending = []
        for device_id in self._dirty:
            entry = self._entries.get(device_id)
            if entry is None:
                continue
            cusum = entry.reputation.cusum
            pending.append(SavedReputation(device_id, entry.generation, cusum - entry.synced))
            entry.synced = cusum
        self._dirty = set()
        return pending

    def merged(self, pending: list[SavedReputation], values: Mapping[uuid.UUID, float]) -> None:
        """Fold in the database's merged CUSUMs: the difference from what this hub expected
        is what other replicas added (a device whose generation moved on is not in `values`)."""
        ceiling = self.params.ceiling
        for item in pending:
            entry = self._entries.get(item.device_id)
            value = values.get(item.device_id)
            if entry is None or value is None or entry.generation != item.generation:
                continue
            others = value - entry.synced
            if others:
                cusum = min(ceiling, max(0.0, entry.reputation.cusum + others))
                entry.reputation = replace(entry.reputation, cusum=cusum)
                entry.synced = value

    def restore(self, pending: list[SavedReputation]) -> None:
        """After a failed write: the movement was not merged, so it is pending again."""
        for item in pending:
            entry = self._entries.get(item.device_id)
            if entry is not None and entry.generation == item.generation:
                entry.synced -= item.delta
                self._dirty.add(item.device_id)
