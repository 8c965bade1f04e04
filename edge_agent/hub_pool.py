"""The agent's hubs: one `HubClient` per candidate URL, behind `HubClient`'s own interface.

Candidates come from named sources (`CandidateSource`: a static URL, mDNS discovery, later a
signed replica list); `set_candidates(source, ...)` replaces one source's set. Each candidate
gets its own client (its own breaker, attestation and key check), built by an injected
factory; a removed candidate's client is dropped once no request is out on it.

`escalate` picks a hub with `hub_choice.order`, counts the requests outstanding on each and
measures their latency. When the chosen hub fails as a hub (unreachable, slow, 5xx, rate
limited, refused evidence, a bad answer) the same request is tried once on the next usable
candidate, so a hub dying mid-run costs no request while another is up. A refusal of this
device or of this one request is an answer, not a hub failure: it is not retried elsewhere.

With one static URL the pool behaves exactly as that URL's `HubClient`: every call goes to it
and its exceptions come through unchanged. All state is touched on the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from attestation import Verdict
from edge_agent.breaker import BreakerState
from edge_agent.errors import HubUnavailable
from edge_agent.hub_choice import CandidateSource, CandidateView, order, smoothed
from edge_agent.hub_client import AttestedHub, EscalationResult, HubClient, HubStatus
from escalade_protocol.messages import AnswerReason

log = logging.getLogger("edge_agent.hub")

Clock = Callable[[], float]

# Failures of the hub itself: the request is worth one more try on another hub.
HUB_FAILURES = frozenset(
    {
        AnswerReason.HUB_UNREACHABLE,
        AnswerReason.HUB_TIMEOUT,
        AnswerReason.HUB_RATE_LIMITED,
        AnswerReason.ATTESTATION_REFUSED,
        AnswerReason.MODEL_MISMATCH,
        AnswerReason.BAD_ANSWER,
    }
)
# A candidate whose last appraisal failed is refused until a probe appraises it again.
REFUSED = frozenset({AnswerReason.ATTESTATION_REFUSED, AnswerReason.MODEL_MISMATCH})
# Sources in order of precedence when two name the same URL (the operator's wins).
_PRECEDENCE = (CandidateSource.STATIC, CandidateSource.REPLICAS, CandidateSource.MDNS)


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateInfo:
    """What a source says about a candidate: claims, all of them checked before use."""

    # The hub key id (hex) the advertisement claims; None: no claim (a static URL).
    kfp: str | None = None
    name: str = ""
    addresses: tuple[str, ...] = ()
    txt: tuple[tuple[str, str], ...] = ()


ClientFactory = Callable[[str, CandidateInfo], HubClient]


class Hubs(Protocol):
    """What the rest of the agent uses: `HubClient` (one hub) and `HubPool` both are this."""

    @property
    def hub_up(self) -> bool: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def attested(self) -> AttestedHub | None: ...
    @property
    def last_verdict(self) -> Verdict | None: ...
    @property
    def device_refusal(self) -> HubUnavailable | None: ...
    def status(self) -> HubStatus: ...
    def retry_in(self) -> float: ...
    async def ensure_attested(self) -> AttestedHub: ...
    async def probe(self) -> AttestedHub: ...
    async def escalate(
        self,
        embedding: npt.NDArray[np.float32],
        *,
        features: npt.NDArray[np.float32] | None = None,
        local_probs: npt.NDArray[np.float32] | None = None,
    ) -> EscalationResult: ...
    async def post(self, path: str, body: bytes, content_type: str) -> bytes: ...


@dataclass(slots=True)
class _Entry:
    url: str
    info: CandidateInfo
    client: HubClient
    sources: tuple[CandidateSource, ...]
    outstanding: int = 0
    latency_ms: float | None = None
    retired: bool = field(default=False)


def _nothing_found() -> HubUnavailable:
    return HubUnavailable(AnswerReason.HUB_UNREACHABLE, "no hub found yet (discovery running)")


class HubPool:
    def __init__(self, factory: ClientFactory, *, clock: Clock = time.monotonic) -> None:
        self._factory = factory
        self._clock = clock
        self._sources: dict[CandidateSource, dict[str, CandidateInfo]] = {}
        self._entries: dict[str, _Entry] = {}
        # Removed while requests were out on them: dropped when the last one returns.
        self._retiring: list[_Entry] = []
        # The hub `attested` / `ensure_attested` named last: `post` goes there, since the
        # caller bound its report to that hub's key id.
        self._current: _Entry | None = None
        self._changed = asyncio.Event()

    # --- candidates --------------------------------------------------------------------------

    def set_candidates(
        self, source: CandidateSource | str, candidates: Mapping[str, CandidateInfo]
    ) -> None:
        """Replace `source`'s candidates (URL -> what the source claims about it)."""
        self._sources[CandidateSource(source)] = dict(candidates)
        wanted: dict[str, tuple[CandidateInfo, tuple[CandidateSource, ...]]] = {}
        for src in _PRECEDENCE:
            for url, info in self._sources.get(src, {}).items():
                known = wanted.get(url)
                wanted[url] = (known[0], (*known[1], src)) if known else (info, (src,))
        for old in list(self._entries.values()):
            if old.url not in wanted or wanted[old.url][0].kfp != old.info.kfp:
                # Gone, or now claiming other keys: its appraisal says nothing about the claim.
                self._retire(old)
        for url, (info, sources) in wanted.items():
            entry = self._entries.get(url)
            if entry is None:
                log.info("hub candidate %s (%s)", url, ",".join(sources))
                self._entries[url] = _Entry(url, info, self._factory(url, info), sources)
            else:
                entry.info, entry.sources = info, sources
        self._changed.set()

    def _retire(self, entry: _Entry) -> None:
        del self._entries[entry.url]
        log.info("hub candidate %s removed", entry.url)
        if self._current is entry:
            self._current = None
        if entry.outstanding:
            entry.retired = True
            self._retiring.append(entry)

    def _release(self, entry: _Entry) -> None:
        entry.outstanding -= 1
        if entry.retired and entry.outstanding == 0:
            self._retiring.remove(entry)

    async def wait_changed(self, timeout_s: float) -> None:
        """Return when the candidates changed since the last return, or after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return
        self._changed.clear()

    def _view(self, entry: _Entry) -> CandidateView:
        client = entry.client
        status = client.status()
        verdict = client.last_verdict
        return CandidateView(
            url=entry.url,
            sources=entry.sources,
            attested=status.attested,
            verdict=verdict.status.value if verdict is not None else None,
            allows=client.hub_up,
            outstanding=entry.outstanding,
            latency_ms=entry.latency_ms,
            refusal=status.failure_detail if status.failure in REFUSED else None,
            kfp=entry.info.kfp,
            healthy=client.healthy,
        )

    def candidates(self) -> list[CandidateView]:
        """Every candidate, those in use first (for `status`, `discover` and metrics)."""
        views = [self._view(e) for e in self._entries.values()]
        ranked = order(views)
        return ranked + sorted((v for v in views if v not in ranked), key=lambda v: v.url)

    def info(self, url: str) -> CandidateInfo | None:
        entry = self._entries.get(url)
        return entry.info if entry is not None else None

    def _ranked(self, exclude: frozenset[str] = frozenset()) -> list[_Entry]:
        views = [self._view(e) for e in self._entries.values() if e.url not in exclude]
        return [self._entries[v.url] for v in order(views)]

    def _fallback(self) -> _Entry | None:
        """No candidate usable: the one whose own refusal the caller should hear."""
        if not self._entries:
            return None
        return min(self._entries.values(), key=lambda e: (_PRECEDENCE.index(e.sources[0]), e.url))

    def _preferred(self) -> _Entry | None:
        if self._current is not None and self._current.url in self._entries:
            return self._current
        ranked = self._ranked()
        return ranked[0] if ranked else self._fallback()

    def preferred_client(self) -> HubClient | None:
        """The client of the hub in use, else of the best candidate (None: no candidates)."""
        entry = self._preferred()
        return entry.client if entry is not None else None

    @property
    def current_url(self) -> str | None:
        """The hub in use (the last one escalated to or attested), else the best candidate."""
        entry = self._preferred()
        return entry.url if entry is not None else None

    # --- HubClient's interface ---------------------------------------------------------------

    @property
    def hub_up(self) -> bool:
        return any(e.client.hub_up for e in self._entries.values())

    @property
    def healthy(self) -> bool:
        return bool(self._entries) and all(e.client.healthy for e in self._entries.values())

    @property
    def attested(self) -> AttestedHub | None:
        """The best attested hub now; `post` goes to it."""
        for entry in self._ranked():
            hub = entry.client.attested
            if hub is not None:
                self._current = entry
                return hub
        # None usable: the appraisal that still holds, as a lone HubClient reports it.
        preferred = self._preferred()
        return preferred.client.attested if preferred is not None else None

    @property
    def last_verdict(self) -> Verdict | None:
        entry = self._preferred()
        return entry.client.last_verdict if entry is not None else None

    @property
    def device_refusal(self) -> HubUnavailable | None:
        entry = self._preferred()
        return entry.client.device_refusal if entry is not None else None

    def status(self) -> HubStatus:
        entry = self._preferred()
        if entry is not None:
            return entry.client.status()
        failure = _nothing_found()
        return HubStatus(
            breaker=BreakerState.OPEN,
            attested=False,
            last_verdict=None,
            failure=failure.reason,
            failure_code=None,
            failure_detail=str(failure),
        )

    def retry_in(self) -> float:
        waits = [e.client.retry_in() for e in self._entries.values() if not e.client.healthy]
        return min(waits, default=0.0)

    async def ensure_attested(self) -> AttestedHub:
        """Attest every candidate unless freshly appraised; the best attested one."""
        return await self._refresh(probe=False)

    async def probe(self) -> AttestedHub:
        """Attest afresh the candidates that failed; keep the others' appraisals fresh."""
        return await self._refresh(probe=True)

    async def _refresh(self, *, probe: bool) -> AttestedHub:
        entries = list(self._entries.values())
        if not entries:
            raise _nothing_found()
        outcomes = await asyncio.gather(
            *(self._attest(e, probe=probe and not e.client.healthy) for e in entries),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, HubUnavailable):
                raise outcome
        hub = self.attested
        if hub is not None:
            return hub
        fallback = self._fallback()
        failure = outcomes[entries.index(fallback)] if fallback in entries else None
        if isinstance(failure, HubUnavailable):
            raise failure
        raise _nothing_found()

    async def _attest(self, entry: _Entry, *, probe: bool) -> AttestedHub:
        started = self._clock()
        fresh = entry.client.attested is None
        hub = await (entry.client.probe() if probe else entry.client.ensure_attested())
        if fresh and entry.latency_ms is None:
            # A first latency figure before any escalation: the attestation round trip.
            entry.latency_ms = (self._clock() - started) * 1000.0
        return hub

    async def escalate(
        self,
        embedding: npt.NDArray[np.float32],
        *,
        features: npt.NDArray[np.float32] | None = None,
        local_probs: npt.NDArray[np.float32] | None = None,
    ) -> EscalationResult:
        tried: set[str] = set()
        failure: HubUnavailable | None = None
        for attempt in range(2):
            ranked = self._ranked(frozenset(tried))
            entry = ranked[0] if ranked else (self._fallback() if attempt == 0 else None)
            if entry is None:
                break
            tried.add(entry.url)
            try:
                return await self._escalate_on(entry, embedding, features, local_probs)
            except HubUnavailable as exc:
                if exc.reason not in HUB_FAILURES:
                    raise
                if failure is None:
                    failure = exc
                if attempt == 0 and len(self._entries) > 1:
                    log.info("hub %s failed (%s): trying the next one", entry.url, exc.reason)
        if failure is not None:
            raise failure
        raise _nothing_found()

    async def _escalate_on(
        self,
        entry: _Entry,
        embedding: npt.NDArray[np.float32],
        features: npt.NDArray[np.float32] | None,
        local_probs: npt.NDArray[np.float32] | None,
    ) -> EscalationResult:
        entry.outstanding += 1
        started = self._clock()
        try:
            result = await entry.client.escalate(
                embedding, features=features, local_probs=local_probs
            )
        finally:
            self._release(entry)
        entry.latency_ms = smoothed(entry.latency_ms, (self._clock() - started) * 1000.0)
        self._current = entry
        return result

    def client_for(self, hub: AttestedHub) -> HubClient | None:
        """The client of the candidate attested with this identity (an audit's reveal must go
        to the hub that asked: it is sealed to its key); None once that hub is gone."""
        for entry in self._entries.values():
            attested = entry.client.attested
            if attested is not None and attested.key_id == hub.key_id:
                return entry.client
        return None

    async def post(self, path: str, body: bytes, content_type: str) -> bytes:
        entry = self._preferred()
        if entry is None:
            raise _nothing_found()
        entry.outstanding += 1
        try:
            return await entry.client.post(path, body, content_type)
        finally:
            self._release(entry)


__all__ = ["CandidateInfo", "ClientFactory", "HubPool", "Hubs"]
