"""Serving attestation evidence without letting anyone exhaust the quoting enclave.

`/v1/attestation` needs no credentials (a device attests the hub before it trusts it), and each
fresh nonce costs a quote from the platform's quoting enclave (milliseconds, one at a time).
So: a token bucket per client address and one for the whole hub bound how many quotes anyone
can ask for; bundles are cached by nonce for `cache_ttl_s`, so a client retrying with the same
nonce (or many clients sent the same one) costs one quote; concurrent requests for one nonce
share the quote in flight. Pure bookkeeping with an injected clock; used on the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationLimits:
    # Per client address: sustained quotes per second, and the burst it may spend at once.
    client_rate_per_s: float = 1.0
    client_burst: float = 10.0
    # For the whole hub, whoever asks.
    hub_rate_per_s: float = 50.0
    hub_burst: float = 100.0
    cache_ttl_s: float = 30.0
    cache_size: int = 1024
    # Buckets of this many clients at most are remembered (the oldest are forgotten).
    max_clients: int = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    def __init__(
        self, rate_per_s: float, burst: float, *, max_keys: int, clock: Callable[[], float]
    ) -> None:
        self._rate, self._burst, self._max = rate_per_s, burst, max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend a token for `key`: 0.0 if granted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate

    def refund(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self._burst, bucket.tokens + 1)


class NonceCache(Generic[T]):
    """Values by nonce, each for `ttl_s`, at most `size` of them (least recently added first)."""

    def __init__(self, *, ttl_s: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl, self._size, self._clock = ttl_s, size, clock
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def get(self, nonce: bytes) -> T | None:
        entry = self._entries.get(nonce)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[nonce]
            return None
        return entry[1]

    def put(self, nonce: bytes, value: T) -> None:
        self._entries.pop(nonce, None)
        self._entries[nonce] = (self._clock() + self._ttl, value)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, nonce: bytes) -> None:
        self._entries.pop(nonce, None)


class AttestationDesk(Generic[T]):
    """Admission for quote requests: cached answer, a wait time, or go ahead."""

    def __init__(
        self, limits: AttestationLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clients = TokenBuckets(
            limits.client_rate_per_s, limits.client_burst, max_keys=limits.max_clients, clock=clock
        )
        self._hub = TokenBuckets(limits.hub_rate_per_s, limits.hub_burst, max_keys=1, clock=clock)
        self.cache: NonceCache[T] = NonceCache(
            ttl_s=limits.cache_ttl_s, size=limits.cache_size, clock=clock
        )

    def admit(self, client: str) -> float:
        """0.0: this client may have a fresh quote now; else seconds to wait (nothing spent)."""
        wait = self._clients.take(client)
        if wait > 0:
            return wait
        wait = self._hub.take("hub")
        if wait > 0:
            self._clients.refund(client)
        return wait
