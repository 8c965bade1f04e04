"""Which hub the agent uses next: a pure ordering of candidate views.

Candidates come from named sources (a static URL, mDNS, later a signed replica list). Each is
seen as a `CandidateView`; `order` returns the ones that may be used, in order of use:

1. attested and usable (breaker allows), those that have not just failed first, before
   usable but not yet attested;
2. then fewest requests outstanding (spreads concurrent escalations over hubs);
3. then lowest measured latency (unmeasured last);
4. then the URL, so that the order is stable.

A refused candidate (its evidence fails the policy, or its advertised `kfp` is not the key id
its evidence binds) is never in the order; it keeps its reason for `discover` and `status`.
A candidate whose breaker refuses calls is not in the order either: it is probed in the
background and comes back once it answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class CandidateSource(StrEnum):
    STATIC = "static"
    MDNS = "mdns"
    REPLICAS = "replicas"


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateView:
    """What the pool knows about one candidate hub at one moment."""

    url: str
    sources: tuple[CandidateSource, ...]
    attested: bool
    # The appraisal's status ("trusted", "refused", ...); None before the first attestation.
    verdict: str | None
    allows: bool
    outstanding: int
    latency_ms: float | None
    # Why this candidate is never used; None when it may be.
    refusal: str | None
    kfp: str | None = None
    # False while its breaker is not closed (a recent failure): it may take a probe, but a
    # hub that has not failed goes first.
    healthy: bool = True

    @property
    def usable(self) -> bool:
        return self.refusal is None and self.allows


def _key(view: CandidateView) -> tuple[int, int, float, str]:
    latency = view.latency_ms if view.latency_ms is not None else math.inf
    tier = (0 if view.healthy else 1) if view.attested else 2
    return (tier, view.outstanding, latency, view.url)


def order(views: Iterable[CandidateView]) -> list[CandidateView]:
    """The usable candidates, best first (see the module docstring)."""
    return sorted((v for v in views if v.usable), key=_key)


def smoothed(previous: float | None, sample_ms: float, *, weight: float = 0.3) -> float:
    """Exponentially weighted latency: recent samples count, one outlier does not rule."""
    if previous is None:
        return sample_ms
    return (1.0 - weight) * previous + weight * sample_ms


__all__ = ["CandidateSource", "CandidateView", "order", "smoothed"]
