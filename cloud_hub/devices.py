"""A short-lived cache of enrolled devices in front of the database.

Every escalation needs its device's key and status; reading them from the database per request
cost more than all the cryptography together. Only active devices are cached, for `ttl_s`
seconds: a quarantine or revocation made through this replica applies at once (`invalidate`),
one made through another replica within `ttl_s`; a release applies at once everywhere, since
devices that are not active are read from the database on every request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from cloud_hub.store import Device, Store

DEFAULT_TTL_S = 2.0


class DeviceCache:
    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, Device]] = {}

    def cached(self, device_id: uuid.UUID) -> Device | None:
        """The device if a fresh copy is cached; None means "ask `load`", not "unknown"."""
        entry = self._entries.get(device_id)
        if entry is None:
            return None
        expires, device = entry
        if self._clock() >= expires:
            del self._entries[device_id]
            return None
        return device

    def load(self, device_id: uuid.UUID) -> Device | None:
        """Read the device from the database (blocking) and cache it if it exists."""
        device = self._store.get_device(device_id)
        if device is not None and device.status == "active":
            self._entries[device_id] = (self._clock() + self._ttl, device)
        return device

    def get(self, device_id: uuid.UUID) -> Device | None:
        return self.cached(device_id) or self.load(device_id)

    def invalidate(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
