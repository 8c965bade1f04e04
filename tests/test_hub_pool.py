"""The agent's hub pool over scripted hubs (real keys, real evidence, real signed answers):
one static URL behaves as HubClient; several hubs are chosen, spread and failed over."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
from test_agent_hub_client import SIMULATED, Clock, ScriptedHub, model_info

from edge_agent.errors import HubUnavailable
from edge_agent.hub_choice import CandidateSource
from edge_agent.hub_client import HubClient
from edge_agent.hub_pool import CandidateInfo, HubPool
from edge_agent.identity import DeviceIdentity
from edge_agent.transport import Reply
from escalade_protocol.artifacts import ModelManifest, load_manifest
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import AnswerReason


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> ModelManifest:
    return load_manifest(bundle_dir)


class Lan:
    """Scripted hubs by URL, and a pool whose factory builds real HubClients over them."""

    def __init__(self, manifest: ModelManifest, *urls: str) -> None:
        self.manifest = manifest
        self.clock = Clock()
        self.hubs = {url: ScriptedHub(model_info(manifest)) for url in urls}
        self.built: list[str] = []
        device = DeviceIdentity(uuid.uuid4(), Ed25519PrivateKey.generate(), "auto")

        def factory(url: str, info: CandidateInfo) -> HubClient:
            self.built.append(url)
            return HubClient(
                self.hubs[url],
                identity=device,
                manifest=manifest,
                policy=SIMULATED,
                timeout_s=2.0,
                breaker_cooldown_s=0.5,
                breaker_max_cooldown_s=4.0,
                clock=self.clock,
                expected_key_id=bytes.fromhex(info.kfp) if info.kfp else None,
            )

        self.pool = HubPool(factory, clock=self.clock)
        self.embedding = np.zeros(manifest.embedding_dim, dtype=np.float32)

    def announce(self, *urls: str, kfp: dict[str, str] | None = None) -> None:
        lies = kfp or {}
        self.pool.set_candidates(
            CandidateSource.MDNS,
            {
                u: CandidateInfo(kfp=lies.get(u, self.hubs[u].identity.key_id.hex()), name=u)
                for u in urls
            },
        )

    def escalations(self, url: str) -> int:
        return self.hubs[url].calls.count("/v1/escalate")


async def test_one_static_url_behaves_as_its_hub_client(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://a")
    lan.pool.set_candidates(CandidateSource.STATIC, {"http://a": CandidateInfo()})
    hub = lan.hubs["http://a"]
    assert (await lan.pool.escalate(lan.embedding)).answer.label == 3
    assert lan.pool.healthy
    assert lan.pool.attested is not None
    hub.down = True
    with pytest.raises(HubUnavailable) as failed:
        await lan.pool.escalate(lan.embedding)
    assert failed.value.reason is AnswerReason.HUB_UNREACHABLE
    assert not lan.pool.hub_up  # the breaker opened, as HubClient's does
    assert lan.pool.status().failure is AnswerReason.HUB_UNREACHABLE
    assert lan.pool.retry_in() == pytest.approx(0.5)
    with pytest.raises(HubUnavailable, match="paused"):
        await lan.pool.escalate(lan.embedding)
    hub.down = False
    lan.clock.now += 0.6
    await lan.pool.probe()
    assert lan.pool.healthy
    assert lan.pool.current_url == "http://a"


async def test_no_candidate_yet_is_hub_unreachable(manifest: ModelManifest) -> None:
    lan = Lan(manifest)
    assert not lan.pool.hub_up
    assert not lan.pool.healthy
    assert lan.pool.status().failure is AnswerReason.HUB_UNREACHABLE
    with pytest.raises(HubUnavailable, match="no hub found"):
        await lan.pool.escalate(lan.embedding)
    with pytest.raises(HubUnavailable, match="no hub found"):
        await lan.pool.ensure_attested()


async def test_a_hub_dying_mid_run_costs_no_request(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://a", "http://b")
    lan.announce("http://a", "http://b")
    await lan.pool.ensure_attested()
    first = lan.pool.candidates()[0].url
    other = "http://b" if first == "http://a" else "http://a"
    lan.hubs[first].down = True
    for _ in range(5):
        await lan.pool.escalate(lan.embedding)  # none raises
    assert lan.escalations(other) == 5
    # After its one failure the dead hub's breaker keeps it out of the order.
    assert lan.escalations(first) == 1
    views = {v.url: v for v in lan.pool.candidates()}
    assert not views[first].allows
    assert lan.pool.current_url == other
    # Its cooldown over, it may take a probe; requests still go to the hub that did not fail.
    lan.clock.now += 0.6
    views = {v.url: v for v in lan.pool.candidates()}
    assert views[first].allows
    assert not views[first].healthy
    await lan.pool.escalate(lan.embedding)
    assert lan.escalations(first) == 1


async def test_a_device_refusal_is_not_retried_elsewhere(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://a", "http://b")
    lan.announce("http://a", "http://b")
    await lan.pool.ensure_attested()
    first = lan.pool.candidates()[0].url
    lan.hubs[first].refuse = ErrorCode.DEVICE_REVOKED
    with pytest.raises(HubUnavailable) as refused:
        await lan.pool.escalate(lan.embedding)
    assert refused.value.reason is AnswerReason.DEVICE_REFUSED
    assert sum(lan.escalations(u) for u in lan.hubs) == 1


async def test_a_lying_kfp_is_refused_with_its_reason_and_never_used(
    manifest: ModelManifest,
) -> None:
    lan = Lan(manifest, "http://honest", "http://liar")
    lan.announce("http://honest", "http://liar", kfp={"http://liar": "ab" * 16})
    await lan.pool.ensure_attested()
    for _ in range(3):
        await lan.pool.escalate(lan.embedding)
    views = {v.url: v for v in lan.pool.candidates()}
    assert views["http://liar"].refusal is not None
    assert "kfp" in views["http://liar"].refusal
    assert views["http://honest"].refusal is None
    assert lan.escalations("http://liar") == 0
    assert lan.escalations("http://honest") == 3


async def test_concurrent_requests_spread_over_attested_hubs(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://a", "http://b")
    lan.announce("http://a", "http://b")
    await lan.pool.ensure_attested()
    gate = asyncio.Event()
    for hub in lan.hubs.values():
        post = hub.post

        async def held(path: str, body: bytes, *, content_type: str, timeout_s: float,
                       _post=post) -> Reply:  # fmt: skip
            await gate.wait()
            return await _post(path, body, content_type=content_type, timeout_s=timeout_s)

        hub.post = held  # type: ignore[method-assign]
    tasks = [asyncio.create_task(lan.pool.escalate(lan.embedding)) for _ in range(4)]
    await asyncio.sleep(0)
    assert sorted(v.outstanding for v in lan.pool.candidates()) == [2, 2]
    gate.set()
    await asyncio.gather(*tasks)
    assert all(v.outstanding == 0 for v in lan.pool.candidates())
    assert lan.escalations("http://a") == lan.escalations("http://b") == 2


async def test_the_faster_hub_is_preferred(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://slow", "http://fast")
    lan.announce("http://slow", "http://fast")
    delays = {"http://slow": 0.050, "http://fast": 0.001}
    for url, hub in lan.hubs.items():
        post = hub.post

        async def timed(path: str, body: bytes, *, content_type: str, timeout_s: float,
                        _post=post, _delay=delays[url]) -> Reply:  # fmt: skip
            lan.clock.now += _delay  # the injected clock measures the latency
            return await _post(path, body, content_type=content_type, timeout_s=timeout_s)

        hub.post = timed  # type: ignore[method-assign]
    await lan.pool.ensure_attested()
    for _ in range(4):
        await lan.pool.escalate(lan.embedding)
    assert lan.escalations("http://fast") == 4
    views = {v.url: v for v in lan.pool.candidates()}
    assert views["http://fast"].latency_ms < views["http://slow"].latency_ms


async def test_replacing_a_source_drops_and_adds_candidates(manifest: ModelManifest) -> None:
    lan = Lan(manifest, "http://a", "http://b")
    lan.pool.set_candidates(CandidateSource.STATIC, {"http://a": CandidateInfo()})
    lan.announce("http://a", "http://b")
    views = {v.url: v.sources for v in lan.pool.candidates()}
    # One client per URL; the operator's source listed first.
    assert views["http://a"] == (CandidateSource.STATIC, CandidateSource.MDNS)
    assert lan.built == ["http://a", "http://b"]
    lan.announce()
    assert [v.url for v in lan.pool.candidates()] == ["http://a"]
    lan.pool.set_candidates(CandidateSource.STATIC, {})
    assert lan.pool.candidates() == []
    # A hub announced again under another kfp (it restarted) gets a fresh client.
    lan.announce("http://b")
    lan.hubs["http://b"].restart()
    lan.announce("http://b")
    assert lan.built == ["http://a", "http://b", "http://b", "http://b"]
    await lan.pool.escalate(lan.embedding)
    assert lan.escalations("http://b") == 1


def test_the_pool_is_exported() -> None:
    import edge_agent

    assert {"HubPool", "Hubs", "CandidateInfo"} <= set(edge_agent.__all__)
    assert edge_agent.HubPool is HubPool
