"""A short-lived cache of enrolled devices in front of the database, used on the event loop.

Every escalation needs its device's key and status; reading them from the database per request
cost more than all the cryptography together. Only active devices are cached, for `ttl_s`
seconds. The cache never decides a revocation on its own: every record is inserted only while
its device is active in the database (`cloud_hub.store.driver_insert`), so a revocation or
quarantine committed anywhere refuses the very next commit, and the cache is dropped for that
device when it does. The TTL bounds only how long an inactive device's requests still cost a
signature check before the commit refuses them. Reads happen on a worker thread; the cache is
filled on the loop (`put`), so no dict is shared between threads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from cloud_hub.store import Device

DEFAULT_TTL_S = 2.0


class DeviceCache:
    def __init__(
        self, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, Device]] = {}

    def cached(self, device_id: uuid.UUID) -> Device | None:
        """The device if a fresh copy is cached; None means "read it", not "unknown"."""
        entry = self._entries.get(device_id)
        if entry is None:
            return None
        expires, device = entry
        if self._clock() >= expires:
            del self._entries[device_id]
            return None
        return device

    def put(self, device: Device | None) -> None:
        """Remember a device just read from the database, if it is active."""
        if device is not None and device.status == "active":
            self._entries[device.device_id] = (self._clock() + self._ttl, device)

    def invalidate(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
