"""SNP appraisal policy (synthetic reports from a test PKI, TEST KEYS) and the KDS fetch step
(a KDS stand-in on loopback serving AMD's real Milan chain and the real VCEK)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from fake_kds import serve_kds
from snp_synth import DEBUG_POLICY, DEFAULT_POLICY, MEASUREMENT, TCB, SnpPki

from attestation import AppraisalPolicy, SnpEvidence, Status, Verdict, appraise
from attestation.policy import PolicyError
from attestation.snp import Product, TcbVersion, parse_report, verify_report
from attestation.snp.errors import KdsError
from attestation.snp.kds import KdsClient, vcek_path
from attestation.snp.report import PLATFORM_SMT_EN, POLICY_MIGRATE_MA, POLICY_SMT

VECTORS = Path(__file__).parent / "vectors" / "snp"
BINDING = os.urandom(64)
INSIDE_VCEK = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> SnpPki:
    return SnpPki()


def policy_for(pki: SnpPki, **changes: object) -> AppraisalPolicy:
    policy = AppraisalPolicy(snp_measurements=frozenset({MEASUREMENT}), snp_ark_pem=pki.ark_pem())
    return replace(policy, **changes)  # type: ignore[arg-type]


def appraise_report(pki: SnpPki, rules: AppraisalPolicy, /, **report_args: object) -> Verdict:
    report_args.setdefault("report_data", BINDING)
    evidence = SnpEvidence(
        report=pki.report(**report_args),  # type: ignore[arg-type]
        vcek=pki.vcek_der(),
        cert_chain=pki.chain_pem().decode(),
        crl=pki.crl(),
    )
    return appraise(evidence, expected_report_data=BINDING, policy=rules, now=pki.now)


def checks(verdict: Verdict) -> set[str]:
    return {f.check for f in verdict.failures}


def test_matching_policy_affirms(pki: SnpPki) -> None:
    verdict = appraise_report(pki, policy_for(pki))
    assert verdict.status is Status.AFFIRMING, verdict.failures
    assert verdict.tee == "sev-snp"
    assert verdict.crypto_ok
    assert verdict.measurements["measurement"] == MEASUREMENT.hex()
    assert verdict.measurements["reported_tcb.snp"] == TCB["snp"]
    assert verdict.report_data == BINDING


def test_debug_guest_is_refused_by_default_and_accepted_when_relaxed(pki: SnpPki) -> None:
    refused = appraise_report(pki, policy_for(pki), policy=DEBUG_POLICY)
    assert refused.status is Status.CONTRAINDICATED
    assert checks(refused) == {"debug"}
    assert refused.crypto_ok
    relaxed = appraise_report(pki, policy_for(pki, allow_debug=True), policy=DEBUG_POLICY)
    assert relaxed.status is Status.WARNING
    assert relaxed.relaxations == ("allow_debug",)


def test_migration_agent_needs_its_relaxation(pki: SnpPki) -> None:
    policy_bits = DEFAULT_POLICY | POLICY_MIGRATE_MA
    assert checks(appraise_report(pki, policy_for(pki), policy=policy_bits)) == {"migration_agent"}
    relaxed = appraise_report(
        pki, policy_for(pki, snp_allow_migration_agent=True), policy=policy_bits
    )
    assert relaxed.relaxations == ("snp_allow_migration_agent",)


def test_smt_refused_only_when_configured(pki: SnpPki) -> None:
    no_smt = policy_for(pki, snp_allow_smt=False)
    assert checks(appraise_report(pki, no_smt)) == {"smt"}  # guest policy allows SMT
    guest_without_smt = DEFAULT_POLICY & ~POLICY_SMT
    assert appraise_report(pki, no_smt, policy=guest_without_smt).status is Status.AFFIRMING
    on_smt_host = appraise_report(
        pki, no_smt, policy=guest_without_smt, platform_info=PLATFORM_SMT_EN
    )
    assert checks(on_smt_host) == {"smt"}


def test_vmpl_above_the_maximum_is_refused(pki: SnpPki) -> None:
    assert checks(appraise_report(pki, policy_for(pki), vmpl=1)) == {"vmpl"}
    assert appraise_report(pki, policy_for(pki, snp_max_vmpl=1), vmpl=1).status is Status.AFFIRMING


def test_minimum_tcb(pki: SnpPki) -> None:
    high = TcbVersion(bootloader=3, tee=0, snp=9, microcode=0)
    assert checks(appraise_report(pki, policy_for(pki, snp_min_tcb=high))) == {"min_tcb"}
    low = TcbVersion(bootloader=3, tee=0, snp=8, microcode=100)
    assert appraise_report(pki, policy_for(pki, snp_min_tcb=low)).status is Status.AFFIRMING


def test_measurement_and_identity_policy(pki: SnpPki) -> None:
    other = policy_for(pki, snp_measurements=frozenset({bytes(48)}))
    assert checks(appraise_report(pki, other)) == {"measurement"}
    none = policy_for(pki, snp_measurements=frozenset())
    assert checks(appraise_report(pki, none)) == {"identity_policy"}


def test_report_data_must_bind_keys_and_nonce(pki: SnpPki) -> None:
    verdict = appraise_report(pki, policy_for(pki), report_data=os.urandom(64))
    assert checks(verdict) == {"report_data"}


def test_snp_can_be_excluded_from_allowed_tees(pki: SnpPki) -> None:
    verdict = appraise_report(pki, policy_for(pki, allowed_tees=frozenset({"sgx"})))
    assert checks(verdict) == {"tee_type"}


def test_pinned_arks_refuse_the_test_pki(pki: SnpPki) -> None:
    verdict = appraise_report(pki, policy_for(pki, snp_ark_pem=None))
    assert "cert_chain" in checks(verdict)
    assert not verdict.crypto_ok


def test_policy_file_with_snp_keys(tmp_path: Path, pki: SnpPki) -> None:
    (tmp_path / "ark.pem").write_bytes(pki.ark_pem())
    (tmp_path / "policy.toml").write_text(
        "[attestation]\n"
        f'snp_measurement = ["{MEASUREMENT.hex()}"]\n'
        "snp_allow_smt = false\n"
        "snp_max_vmpl = 1\n"
        "snp_min_tcb = { bootloader = 2, snp = 7 }\n"
        'snp_ark = "ark.pem"\n'
    )
    policy = AppraisalPolicy.load(tmp_path / "policy.toml")
    assert policy.snp_measurements == frozenset({MEASUREMENT})
    assert not policy.snp_allow_smt
    assert policy.snp_max_vmpl == 1
    assert policy.snp_min_tcb == TcbVersion(bootloader=2, tee=0, snp=7, microcode=0)
    assert policy.snp_ark_pem == pki.ark_pem()
    (tmp_path / "bad.toml").write_text('snp_measurement = ["abcd"]\n')
    with pytest.raises(PolicyError, match="48 bytes"):
        AppraisalPolicy.load(tmp_path / "bad.toml")


# --- KDS ---


def _real_kds_docs() -> tuple[bytes, dict[str, bytes]]:
    report = (VECTORS / "snp_v2_report_vcek.bin").read_bytes()
    parsed = parse_report(report)
    milan = (VECTORS / "amd_milan_ask_ark_asvk.pem").read_bytes()
    ask_ark = b"-----BEGIN CERTIFICATE-----".join(milan.split(b"-----BEGIN CERTIFICATE-----")[:3])
    docs = {
        vcek_path(Product.MILAN, parsed.chip_id, parsed.reported_tcb(Product.MILAN)): (
            VECTORS / "snp_vcek.der"
        ).read_bytes(),
        "vcek/v1/Milan/cert_chain": ask_ark,
        "vcek/v1/Milan/crl": SnpPki().crl(),  # any DER CRL: the fetch step does not judge
    }
    return report, docs


async def test_kds_fetches_caches_on_disk_and_serves_offline(tmp_path: Path) -> None:
    report, docs = _real_kds_docs()
    parsed = parse_report(report)
    clock = [1000.0]
    async with serve_kds(docs) as (url, hits), aiohttp.ClientSession() as http:
        client = KdsClient(http, base_url=url, cache_dir=tmp_path, clock=lambda: clock[0])
        certs = await client.certificates(parsed, Product.MILAN)
        assert len(hits) == 3
        assert hits[0].startswith("vcek/v1/Milan/" + parsed.chip_id.hex() + "?blSPL=3&teeSPL=0")
        await client.certificates(parsed, Product.MILAN)
        assert len(hits) == 3  # all from the disk cache
    verdict = verify_report(report, now=INSIDE_VCEK, vcek=certs.vcek, chain=certs.chain)
    assert verdict.crypto_ok, verdict.failures
    offline = KdsClient(None, base_url=None, cache_dir=tmp_path)
    assert await offline.certificates(parsed, Product.MILAN) == certs


async def test_kds_refetches_a_stale_crl(tmp_path: Path) -> None:
    report, docs = _real_kds_docs()
    parsed = parse_report(report)
    async with serve_kds(docs) as (url, hits), aiohttp.ClientSession() as http:
        client = KdsClient(
            http, base_url=url, cache_dir=tmp_path, crl_ttl_s=60, clock=lambda: 10**12
        )
        await client.certificates(parsed, Product.MILAN)
        await client.certificates(parsed, Product.MILAN)
    assert hits.count("vcek/v1/Milan/crl") == 2
    assert hits.count("vcek/v1/Milan/cert_chain") == 1


async def test_kds_errors_are_clear(tmp_path: Path) -> None:
    report, _ = _real_kds_docs()
    parsed = parse_report(report)
    async with serve_kds({}) as (url, _hits), aiohttp.ClientSession() as http:
        with pytest.raises(KdsError, match="HTTP 404"):
            await KdsClient(http, base_url=url).certificates(parsed, Product.MILAN)
    with pytest.raises(KdsError, match="offline"):
        await KdsClient(None, base_url=None, cache_dir=tmp_path).certificates(parsed, Product.MILAN)
    vlek_report = parse_report((VECTORS / "snp_v3_report_vlek.bin").read_bytes())
    with pytest.raises(KdsError, match="VLEK"):
        await KdsClient(None, base_url=None, cache_dir=tmp_path).certificates(
            vlek_report, Product.MILAN
        )
