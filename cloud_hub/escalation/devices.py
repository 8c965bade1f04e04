"""A short-lived cache of enrolled devices in front of the database, used on the event loop.

Every escalation needs its device's key and status; reading them from the database per request
cost more than all the cryptography together. Active devices are cached for `ttl_s` seconds,
inactive ones for `inactive_ttl_s`. The cache never decides a revocation on its own: every
record is inserted only while its device is active in the database
(`cloud_hub.store.driver_insert`), so a revocation or quarantine committed anywhere refuses the
very next commit, and the cache is dropped for that device when it does. The TTL bounds only
how long a revoked device's requests still cost a signature check before the commit refuses
them. Reads happen on a worker thread; the cache is filled on the loop (`put`), so no dict is
shared between threads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from cloud_hub.store import Device
from escalade_protocol.keys import Ed25519PublicKey, load_ed25519_public

DEFAULT_TTL_S = 2.0
# Devices that may not escalate are remembered briefly too, so that a quarantined device's
# flood costs one database read per interval, not one per request; short, so that a release
# applies within it.
INACTIVE_TTL_S = 0.25


class CachedDevice(NamedTuple):
    device: Device
    # The device's key, loaded once (loading it per request cost ~11 µs); None while the
    # device is not active (it is refused before any signature check).
    verify_key: Ed25519PublicKey | None


class DeviceCache:
    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        inactive_ttl_s: float = INACTIVE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._inactive_ttl = inactive_ttl_s
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, CachedDevice]] = {}

    def cached(self, device_id: uuid.UUID) -> CachedDevice | None:
        """The device if a fresh copy is cached; None means "read it", not "unknown"."""
        entry = self._entries.get(device_id)
        if entry is None:
            return None
        expires, cached = entry
        if self._clock() >= expires:
            del self._entries[device_id]
            return None
        return cached

    def put(self, device: Device | None) -> CachedDevice | None:
        """Remember a device just read from the database (unknown ones are not remembered:
        their ids cost nothing to invent)."""
        if device is None:
            return None
        if device.status == "active":
            cached = CachedDevice(device, load_ed25519_public(device.public_key))
            ttl = self._ttl
        else:
            cached, ttl = CachedDevice(device, None), self._inactive_ttl
        self._entries[device.device_id] = (self._clock() + ttl, cached)
        return cached

    def invalidate(self, device_id: uuid.UUID) -> None:
        self._entries.pop(device_id, None)
