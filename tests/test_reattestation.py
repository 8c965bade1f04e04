"""Verdicts carry their validity end; the agent re-attests when it passes or the TTL ends,
whichever is first, and never escalates on an expired verdict. A scripted hub serves real SNP
evidence from a test PKI (TEST KEYS) over an injected transport and clock."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from snp_synth import MEASUREMENT, SnpPki
from test_agent_hub_client import Clock, model_info

from attestation import AppraisalPolicy, SnpEvidence
from attestation.dcap import Collateral, verify_quote
from cloud_hub.identity import HubIdentity
from edge_agent.errors import AttestationRefused
from edge_agent.hub_client import HubClient
from edge_agent.identity import DeviceIdentity
from edge_agent.transport import Reply
from escalade_protocol.artifacts import ModelManifest, load_manifest
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import AttestationRequest, HubModelInfo

VECTORS = Path(__file__).parent / "vectors"


@dataclass
class SnpVm:
    """An attester in a (simulated) SNP VM whose evidence carries a CRL of chosen lifetime."""

    pki: SnpPki
    crl_days: float

    def evidence(self, report_data: bytes) -> SnpEvidence:
        return SnpEvidence(
            report=self.pki.report(report_data=report_data),
            vcek=self.pki.vcek_der(),
            cert_chain=self.pki.chain_pem().decode(),
            crl=self.pki.crl(days=self.crl_days),
        )


@dataclass
class AttestingHub:
    info: HubModelInfo
    vm: SnpVm
    identity: HubIdentity = field(default_factory=HubIdentity.generate)
    calls: int = 0

    async def post(self, path: str, body: bytes, *, content_type: str, timeout_s: float) -> Reply:
        assert path == "/v1/attestation"
        self.calls += 1
        nonce = AttestationRequest.model_validate_json(body).nonce
        bundle = self.identity.attest(self.vm, nonce, self.info)
        return Reply(200, bundle.model_dump_json().encode())


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> ModelManifest:
    return load_manifest(bundle_dir)


def client_for(
    manifest: ModelManifest, *, crl_days: float, ttl_s: float
) -> tuple[AttestingHub, Clock, HubClient]:
    pki = SnpPki(now=datetime.now(UTC))
    hub = AttestingHub(model_info(manifest), SnpVm(pki, crl_days))
    clock = Clock()
    policy = AppraisalPolicy(
        snp_measurements=frozenset({MEASUREMENT}),
        snp_ark_pem=pki.ark.public_bytes(Encoding.PEM),
    )
    client = HubClient(
        hub,
        identity=DeviceIdentity(uuid.uuid4(), Ed25519PrivateKey.generate(), "http://test"),
        manifest=manifest,
        policy=policy,
        attestation_ttl_s=ttl_s,
        clock=clock,
    )
    return hub, clock, client


async def test_reattests_when_the_crl_goes_stale_before_the_ttl(manifest: ModelManifest) -> None:
    hub, clock, client = client_for(manifest, crl_days=60 / 86400, ttl_s=3600.0)
    attested = await client.ensure_attested()
    valid_for = attested.verdict.valid_for_s
    assert valid_for is not None
    assert 50 < valid_for <= 60
    clock.now += valid_for - 5
    assert client.attested is attested
    await client.ensure_attested()
    assert hub.calls == 1
    clock.now += 10  # past the CRL's nextUpdate, long before the TTL
    assert client.attested is None
    await client.ensure_attested()
    assert hub.calls == 2


async def test_the_ttl_still_ends_a_long_lived_verdict(manifest: ModelManifest) -> None:
    hub, clock, client = client_for(manifest, crl_days=7, ttl_s=30.0)
    attested = await client.ensure_attested()
    assert attested.verdict.valid_until is not None
    clock.now += 31
    assert client.attested is None
    await client.ensure_attested()
    assert hub.calls == 2


async def test_evidence_with_stale_collateral_never_authorises(manifest: ModelManifest) -> None:
    _hub, _clock, client = client_for(manifest, crl_days=-1 / 24, ttl_s=3600.0)
    with pytest.raises(AttestationRefused) as refused:
        await client.ensure_attested()
    assert "crl_expired" in str(refused.value.check.summary())
    assert client.attested is None


def test_dcap_verdicts_end_at_the_first_next_update() -> None:
    raw = json.loads((VECTORS / "sgx_v3_collateral.json").read_text())
    now = datetime(2025, 7, 1, tzinfo=UTC)
    verdict = verify_quote(
        (VECTORS / "sgx_v3_quote.bin").read_bytes(), now=now, collateral=Collateral.from_json(raw)
    )
    tcb_next = datetime.fromisoformat(json.loads(raw["tcb_info"])["nextUpdate"])
    assert verdict.valid_until is not None
    assert now < verdict.valid_until <= tcb_next
    assert verdict.valid_until - now < timedelta(days=31)
    bare = verify_quote((VECTORS / "sgx_v3_quote.bin").read_bytes(), now=now)
    assert bare.valid_until is not None  # the PCK chain's notAfter
    assert bare.valid_until > verdict.valid_until
