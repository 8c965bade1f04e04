"""`edge-agent discover` and `enroll --hub auto`: listen for hubs a while, attest each.

Every hub found is attested with a fresh nonce against this agent's policy and model, and its
advertised `kfp` checked against the keys the evidence binds. A hub that fails either is
listed as refused, with the reason; nothing but an attestation request ever reaches it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import aiohttp
from pydantic import BaseModel, ConfigDict

from attestation import AppraisalPolicy
from edge_agent.discovery.browse import Found, found_from, listen
from edge_agent.discovery.mdns import MdnsSettings
from edge_agent.discovery.txt import HUB_SERVICE
from edge_agent.errors import HubUnavailable
from edge_agent.hub_client import HubClient
from edge_agent.identity import DeviceIdentity
from edge_agent.transport import AiohttpTransport
from escalade_protocol.artifacts import ModelManifest
from escalade_protocol.keys import Ed25519PrivateKey


class HubReport(BaseModel):
    """One announced hub as `discover --json` prints it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    url: str | None
    addresses: list[str]
    port: int
    txt: dict[str, str]
    attested: bool
    verdict: str | None
    latency_ms: float | None
    refusal: str | None


class Survey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    hubs: list[HubReport]

    @property
    def usable(self) -> list[HubReport]:
        """Attested hubs, fastest first."""
        ok = [h for h in self.hubs if h.attested]
        return sorted(ok, key=lambda h: (h.latency_ms or 0.0, h.url or ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class SurveyParams:
    mdns: MdnsSettings
    policy: AppraisalPolicy
    manifest: ModelManifest
    listen_s: float
    timeout_s: float = 5.0


async def _appraise(http: aiohttp.ClientSession, found: Found, p: SurveyParams) -> HubReport:
    url = found.url
    base = HubReport(
        name=found.name,
        url=url,
        addresses=list(found.addresses),
        port=found.port,
        txt=dict(found.txt),
        attested=False,
        verdict=None,
        latency_ms=None,
        refusal=found.error,
    )
    if url is None or found.advert is None:
        return base
    # Attestation needs no device identity; HubClient wants one, so it gets a throwaway.
    nobody = DeviceIdentity(uuid.UUID(int=0), Ed25519PrivateKey.generate(), url)
    client = HubClient(
        AiohttpTransport(http, url),
        identity=nobody,
        manifest=p.manifest,
        policy=p.policy,
        timeout_s=p.timeout_s,
        expected_key_id=bytes.fromhex(found.advert.kfp),
    )
    started = time.perf_counter()
    try:
        hub = await client.attest()
    except HubUnavailable as exc:
        verdict = client.last_verdict
        return base.model_copy(
            update={"verdict": verdict.status.value if verdict else None, "refusal": str(exc)}
        )
    latency = (time.perf_counter() - started) * 1000.0
    return base.model_copy(
        update={"attested": True, "verdict": hub.verdict.status.value, "latency_ms": latency}
    )


async def survey(p: SurveyParams) -> Survey:
    found = await listen(p.mdns, HUB_SERVICE, found_from, p.listen_s)
    async with aiohttp.ClientSession() as http:
        reports = await asyncio.gather(*(_appraise(http, f, p) for f in found.values()))
    return Survey(hubs=sorted(reports, key=lambda r: r.name))
