"""Confidential-VM attesters through configfs-tsm: the attester against a fake tree, and a real
hub process on a fake SEV-SNP configfs tree (reports and a host certificate table from a test
PKI, TEST KEYS) used by real agents only under a matching policy."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from dcap_synth import SyntheticPki
from fake_kds import serve_kds
from fake_tsm import FakeTsmTree
from snp_synth import MEASUREMENT, SnpPki
from tdx_synth import MR_TD, tdx_collateral, tdx_quote

from attestation import AppraisalPolicy, AttestationBundle, DcapEvidence, SnpEvidence, appraise
from attestation.dcap import verify_quote
from attestation.snp import verify_report
from attestation.snp.certtable import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    build_cert_table,
    parse_cert_table,
)
from attestation.snp.errors import CertificateError
from attestation.snp.kds import vcek_path
from attestation.snp.report import Product, parse_report
from attestation.tsm import NoTsmError, TsmAttester, TsmError
from cloud_hub.attesters import SnpAttester
from escalade.demo import infer
from escalade.procs import agent_command, enroll_agent, hub_command, migrate_hub, service
from escalade_protocol.artifacts import load_manifest, verified_path

VECTORS = Path(__file__).parent / "vectors"


def snp_evidence_maker(pki: SnpPki, measurement: bytes = MEASUREMENT) -> object:
    table = build_cert_table(
        {
            GUID_VCEK: pki.vcek_der(),
            GUID_ASK: pki.ask.public_bytes(Encoding.DER),
            GUID_ARK: pki.ark.public_bytes(Encoding.DER),
        }
    )

    def make(report_data: bytes) -> tuple[bytes, bytes]:
        return pki.report(report_data=report_data, measurement=measurement), table

    return make


# --- the attester and the certificate table ---


def test_cert_table_round_trip_and_errors() -> None:
    table = build_cert_table({GUID_VCEK: b"vcek", GUID_ARK: b"ark-der"})
    assert parse_cert_table(table) == {GUID_VCEK: b"vcek", GUID_ARK: b"ark-der"}
    assert parse_cert_table(b"") == {}
    with pytest.raises(CertificateError, match="past the buffer"):
        parse_cert_table(table[:24])
    with pytest.raises(CertificateError, match="terminating"):
        parse_cert_table(GUID_VCEK.bytes_le + bytes(8))
    broken = bytearray(table)
    broken[16:20] = (10**6).to_bytes(4, "little")
    with pytest.raises(CertificateError, match="past the buffer"):
        parse_cert_table(bytes(broken))


def test_snp_attester_serves_the_report_and_host_certificates(tmp_path: Path) -> None:
    pki = SnpPki()
    binding = bytes(range(64))
    with FakeTsmTree(
        tmp_path / "tsm", provider="sev_guest", make_evidence=snp_evidence_maker(pki), requests=1
    ) as fake:
        tsm = TsmAttester.open(tmp_path / "tsm", expect="sev-snp")
        assert tsm.tee == "sev-snp"
        evidence = SnpAttester(tsm).evidence(binding)
    assert fake.served == [binding]
    assert isinstance(evidence, SnpEvidence)
    assert evidence.vcek == pki.vcek_der()
    assert evidence.cert_chain is not None
    verdict = verify_report(
        evidence.report,
        now=pki.now,
        vcek=evidence.vcek,
        chain=evidence.cert_chain.encode(),
        ark=pki.ark,
    )
    assert verdict.crypto_ok, verdict.failures
    assert verdict.report is not None
    assert verdict.report.report_data == binding


def test_tdx_attester_serves_the_quote_from_outblob(tmp_path: Path) -> None:
    quote = (VECTORS / "tdx_v4_quote.bin").read_bytes()
    with FakeTsmTree(
        tmp_path / "tsm",
        provider="tdx_guest",
        make_evidence=lambda _rd: (quote, b""),
        requests=1,
    ):
        tsm = TsmAttester.open(tmp_path / "tsm", expect="tdx")
        served = tsm.quote(bytes(64))
    assert served == quote
    assert verify_quote(served, now=datetime(2025, 7, 1, tzinfo=UTC)).crypto_ok


def test_missing_interface_and_wrong_provider_are_named(tmp_path: Path) -> None:
    with pytest.raises(NoTsmError, match="configfs-tsm"):
        TsmAttester.open(tmp_path / "absent")
    with FakeTsmTree(
        tmp_path / "tsm", provider="tdx_guest", make_evidence=lambda _: (b"q", b""), requests=0
    ):
        with pytest.raises(NoTsmError, match="tdx_guest"):
            TsmAttester.open(tmp_path / "tsm", expect="sev-snp")
        (tmp_path / "tsm" / "escalade-hub" / "provider").write_text("arm_cca\n")
        with pytest.raises(TsmError, match="arm_cca"):
            TsmAttester.open(tmp_path / "tsm")


def test_a_generation_change_is_refused(tmp_path: Path) -> None:
    with FakeTsmTree(
        tmp_path / "tsm",
        provider="sev_guest",
        make_evidence=lambda _: (b"report", b""),
        requests=1,
        race=True,
    ):
        tsm = TsmAttester.open(tmp_path / "tsm")
        with pytest.raises(TsmError, match="another writer"):
            tsm.report(bytes(64))
        with pytest.raises(ValueError, match="64 bytes"):
            tsm.report(b"short")


@pytest.mark.parametrize("tee", ["tdx", "sev-snp", "auto"])
def test_hub_without_the_interface_exits_with_a_clear_error(tmp_path: Path, tee: str) -> None:
    argv = hub_command(
        tmp_path / "hub",
        tmp_path / "no-models",
        "--tee",
        tee,
        "--attestation-dir",
        str(tmp_path / "absent"),
        "--migrate",
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "configfs-tsm" in output
    if tee == "auto":
        assert "Gramine" in output


# --- a real hub on a fake SEV-SNP VM, real agents ---


def write_policy(path: Path, *, measurement: bytes, ark: Path | None) -> Path:
    lines = ["[attestation]", f'snp_measurement = ["{measurement.hex()}"]']
    if ark is not None:
        lines.append(f'snp_ark = "{ark}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.timeout(90)
async def test_agent_uses_an_snp_hub_only_under_a_matching_policy(
    bundle_dir: Path, tmp_path: Path
) -> None:
    pki = SnpPki(now=datetime.now(UTC))
    ark = tmp_path / "test-ark.pem"
    ark.write_bytes(pki.ark_pem())
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        sample = np.asarray(data["X"][0], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    with FakeTsmTree(
        tmp_path / "tsm", provider="sev_guest", make_evidence=snp_evidence_maker(pki), requests=10
    ) as fake:
        await migrate_hub(hub_dir)
        argv = hub_command(
            hub_dir, bundle_dir, "--tee", "sev-snp", "--attestation-dir", str(tmp_path / "tsm")
        )
        async with service("hub", argv, log_dir=tmp_path) as hub:
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)

            async def ask(name: str, policy: Path) -> dict[str, object]:
                agent_argv = agent_command(agent_dir, bundle_dir, "--policy", str(policy))
                async with (
                    service(name, agent_argv, log_dir=tmp_path) as agent,
                    aiohttp.ClientSession() as http,
                ):
                    outcome = await infer(http, agent.url, sample, "hub")
                    return outcome.response.model_dump()

            trusted = await ask(
                "agent-matching",
                write_policy(tmp_path / "good.toml", measurement=MEASUREMENT, ark=ark),
            )
            assert trusted["source"] == "hub"
            attestation = trusted["attestation"]
            assert isinstance(attestation, dict)
            assert attestation["status"] == "affirming"
            assert attestation["tee"] == "sev-snp"
            assert attestation["insecure"] is False

            wrong = await ask(
                "agent-other-measurement",
                write_policy(tmp_path / "bad.toml", measurement=bytes(48), ark=ark),
            )
            assert wrong["source"] == "local"
            assert wrong["reason"] == "attestation_refused"
            assert "measurement" in str(wrong["attestation"])

            pinned = await ask(
                "agent-amd-roots",
                write_policy(tmp_path / "amd.toml", measurement=MEASUREMENT, ark=None),
            )
            assert pinned["source"] == "local"
            assert "cert_chain" in str(pinned["attestation"])

            # The bundle itself carries an SNP report binding the hub's keys.
            async with aiohttp.ClientSession() as http:
                nonce = bytes(32)
                async with http.post(
                    f"{hub.url}/v1/attestation", json={"nonce": nonce.hex()}
                ) as response:
                    body = await response.text()
            bundle = AttestationBundle.model_validate_json(body)
            assert isinstance(bundle.evidence, SnpEvidence)
    served = [rd for rd in fake.served if rd != bytes(64)]
    assert len(set(served)) == len(served) >= 3


@pytest.mark.timeout(120)
async def test_an_snp_hub_without_a_host_certificate_table_serves_the_vcek_from_kds(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The host gives no auxblob: the hub fetches its VCEK, chain and CRL from a (loopback)
    KDS, caches them, passes them on with every report, and serves them offline next start."""
    pki = SnpPki(now=datetime.now(UTC))
    ark = tmp_path / "test-ark.pem"
    ark.write_bytes(pki.ark_pem())
    probe = parse_report(pki.report())
    docs = {
        vcek_path(Product.MILAN, probe.chip_id, probe.reported_tcb(Product.MILAN)): pki.vcek_der(),
        "vcek/v1/Milan/cert_chain": pki.chain_pem(),
        "vcek/v1/Milan/crl": pki.crl(),
    }
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        sample = np.asarray(data["X"][0], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"

    def no_table(report_data: bytes) -> tuple[bytes, bytes]:
        return pki.report(report_data=report_data, measurement=MEASUREMENT), b""

    policy = write_policy(tmp_path / "good.toml", measurement=MEASUREMENT, ark=ark)
    with FakeTsmTree(tmp_path / "tsm", provider="sev_guest", make_evidence=no_table, requests=20):
        await migrate_hub(hub_dir)
        async with serve_kds(docs) as (kds_url, hits):
            argv = hub_command(
                hub_dir, bundle_dir, "--tee", "sev-snp", "--attestation-dir", str(tmp_path / "tsm"),
                "--kds-url", kds_url,
            )  # fmt: skip
            async with service("hub", argv, log_dir=tmp_path) as hub:
                await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
                agent_argv = agent_command(agent_dir, bundle_dir, "--policy", str(policy))
                async with (
                    service("agent", agent_argv, log_dir=tmp_path) as agent,
                    aiohttp.ClientSession() as http,
                ):
                    outcome = await infer(http, agent.url, sample, "hub")
            assert outcome.response.source == "hub"
            assert outcome.response.attestation is not None
            assert outcome.response.attestation.status == "affirming"
            assert sorted(hits) == sorted(docs)
        # KDS gone: the next start reads the cache only.
        offline = hub_command(
            hub_dir, bundle_dir, "--tee", "sev-snp", "--attestation-dir", str(tmp_path / "tsm"),
            "--kds-url", "offline",
        )  # fmt: skip
        async with (
            service("hub-offline", offline, log_dir=tmp_path) as hub,
            aiohttp.ClientSession() as http,
            http.post(f"{hub.url}/v1/attestation", json={"nonce": "00" * 32}) as response,
        ):
            bundle = AttestationBundle.model_validate_json(await response.read())
    assert isinstance(bundle.evidence, SnpEvidence)
    assert bundle.evidence.vcek == pki.vcek_der()
    assert bundle.evidence.crl == docs["vcek/v1/Milan/crl"]


@pytest.mark.timeout(60)
async def test_a_tdx_hub_serves_its_quote_with_collateral(bundle_dir: Path, tmp_path: Path) -> None:
    """A real hub with --tee tdx on a fake tree serving the real TDX sample quote: the bundle
    carries that quote and the collateral file; the quote verifies (it binds no hub key, so
    an agent would refuse it with `report_data`: see docs/attestation.md)."""
    quote = (VECTORS / "tdx_v4_quote.bin").read_bytes()
    collateral = VECTORS / "tdx_v4_collateral.json"
    hub_dir = tmp_path / "hub"
    with FakeTsmTree(
        tmp_path / "tsm", provider="tdx_guest", make_evidence=lambda _: (quote, b""), requests=2
    ) as fake:
        await migrate_hub(hub_dir)
        argv = hub_command(
            hub_dir,
            bundle_dir,
            "--tee",
            "tdx",
            "--attestation-dir",
            str(tmp_path / "tsm"),
            "--collateral",
            str(collateral),
        )
        async with service("hub", argv, log_dir=tmp_path) as hub, aiohttp.ClientSession() as http:
            nonce = bytes(range(32))
            async with http.post(f"{hub.url}/v1/attestation", json={"nonce": nonce.hex()}) as r:
                body = await r.text()
    bundle = AttestationBundle.model_validate_json(body)
    evidence = bundle.evidence
    assert isinstance(evidence, DcapEvidence)
    assert evidence.quote == quote
    assert evidence.collateral is not None
    assert len(fake.served) == 1
    assert fake.served[0] != bytes(64)  # the hub's binding of its keys and our nonce
    verdict = appraise(
        evidence,
        expected_report_data=fake.served[0],
        policy=AppraisalPolicy(require_identity=False),
        now=datetime(2025, 7, 1, tzinfo=UTC),
    )
    assert verdict.tee == "tdx"
    assert verdict.crypto_ok
    assert [f.check for f in verdict.failures] == ["report_data"]


@pytest.mark.timeout(90)
async def test_agent_uses_a_tdx_hub_only_under_a_matching_policy(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A real hub on a fake TDX VM (synthetic TDX quotes from a test PCK hierarchy, TEST KEYS)
    and real agents: affirming under the matching MRTD and test root, refused otherwise."""
    pki = SyntheticPki()
    root = tmp_path / "test-root.pem"
    root.write_bytes(pki.root_pem)
    collateral = tmp_path / "collateral.json"
    collateral.write_text(json.dumps(tdx_collateral(pki)))
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        sample = np.asarray(data["X"][0], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    with FakeTsmTree(
        tmp_path / "tsm",
        provider="tdx_guest",
        make_evidence=lambda report_data: (tdx_quote(pki, report_data=report_data), b""),
        requests=10,
    ):
        await migrate_hub(hub_dir)
        argv = hub_command(
            hub_dir,
            bundle_dir,
            "--tee",
            "tdx",
            "--attestation-dir",
            str(tmp_path / "tsm"),
            "--collateral",
            str(collateral),
        )
        async with service("hub", argv, log_dir=tmp_path) as hub:
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)

            async def ask(name: str, mr_td: bytes, trust_root: bool) -> dict[str, object]:
                policy = tmp_path / f"{name}.toml"
                lines = ["[attestation]", f'mr_td = ["{mr_td.hex()}"]']
                if trust_root:
                    lines.append(f'root_ca = "{root}"')
                policy.write_text("\n".join(lines) + "\n")
                agent_argv = agent_command(agent_dir, bundle_dir, "--policy", str(policy))
                async with (
                    service(name, agent_argv, log_dir=tmp_path) as agent,
                    aiohttp.ClientSession() as http,
                ):
                    outcome = await infer(http, agent.url, sample, "hub")
                    return outcome.response.model_dump()

            trusted = await ask("agent-matching", MR_TD, trust_root=True)
            assert trusted["source"] == "hub"
            attestation = trusted["attestation"]
            assert isinstance(attestation, dict)
            assert attestation["status"] == "affirming"
            assert attestation["tee"] == "tdx"
            wrong = await ask("agent-other-td", bytes(48), trust_root=True)
            assert wrong["source"] == "local"
            assert "mr_td" in str(wrong["attestation"])
            pinned = await ask("agent-intel-root", MR_TD, trust_root=False)
            assert pinned["source"] == "local"
            assert "pck_chain" in str(pinned["attestation"])
