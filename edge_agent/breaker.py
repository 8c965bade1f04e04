"""The circuit breaker in front of the hub: pure state, the caller passes the clock.

closed ──failure──> open (cooldown, doubled per failed probe up to a maximum)
open ──cooldown over──> half_open: one probe may go; the others answer locally
half_open ──probe succeeds──> closed      half_open ──probe fails──> open (longer)

A probe holds the half-open slot for at most `probe_lease_s` (the request timeout), so a probe
that never returns (a cancelled request) cannot keep the breaker half-open for ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Breaker:
    cooldown_s: float = 0.25
    max_cooldown_s: float = 5.0
    probe_lease_s: float = 5.0
    # Consecutive failures; 0 while closed.
    failures: int = 0
    # Until when requests are refused (open), or the running probe's lease ends (half-open).
    blocked_until: float = -math.inf
    probing: bool = False

    def state(self, now: float) -> BreakerState:
        if self.failures == 0:
            return BreakerState.CLOSED
        if now < self.blocked_until and not self.probing:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows(self, now: float) -> bool:
        """Whether a request may go now (without taking the probe slot)."""
        return self.failures == 0 or now >= self.blocked_until

    def admit(self, now: float) -> tuple[bool, Breaker]:
        """May a request go now? In half-open, the first caller takes the probe slot."""
        if self.failures == 0:
            return True, self
        if now < self.blocked_until:
            return False, self
        return True, replace(self, probing=True, blocked_until=now + self.probe_lease_s)

    def succeeded(self) -> Breaker:
        return replace(self, failures=0, blocked_until=-math.inf, probing=False)

    def failed(self, now: float) -> Breaker:
        failures = self.failures + 1
        cooldown = min(self.max_cooldown_s, self.cooldown_s * 2.0 ** (failures - 1))
        return replace(self, failures=failures, blocked_until=now + cooldown, probing=False)

    def retry_in(self, now: float) -> float:
        return max(0.0, self.blocked_until - now) if self.failures else 0.0
