"""SEV-SNP verification against AMD's real public vectors (tests/vectors/snp, from
confidential-containers/trustee) and a synthetic test PKI (tests/snp_synth.py, TEST KEYS)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from snp_synth import CHIP_ID, DEBUG_POLICY, DEFAULT_POLICY, MEASUREMENT, TCB, SnpPki

import attestation.snp
from attestation.snp import (
    Product,
    ReportFormatError,
    SigningKey,
    SnpVerdict,
    key_extensions,
    looks_like_snp_report,
    parse_report,
    pinned_products,
    verify_report,
)
from attestation.snp.certs import load_certificate
from attestation.snp.report import OFF_SIGNATURE, POLICY_MIGRATE_MA, SIGNED_LEN

VECTORS = Path(__file__).parent / "vectors" / "snp"
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside both the VCEK's and the VLEK's validity
REPORTS = {"vcek": "snp_v2_report_vcek.bin", "vlek": "snp_v3_report_vlek.bin"}
KEYS = {"vcek": "snp_vcek.der", "vlek": "snp_vlek.der"}


def _read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _checks(verdict: SnpVerdict) -> set[str]:
    return {f.check for f in verdict.failures}


def test_public_surface() -> None:
    assert set(attestation.snp.__all__) == {
        "CertificateError",
        "KdsError",
        "KeyExtensions",
        "Product",
        "ReportFormatError",
        "SigningKey",
        "SnpReport",
        "SnpVerdict",
        "TcbVersion",
        "key_extensions",
        "looks_like_snp_report",
        "parse_report",
        "pinned_products",
        "verify_report",
    }


# --- the real vectors ---


def test_parse_v2_vcek_report() -> None:
    report = parse_report(_read(REPORTS["vcek"]))
    assert report.version == 2
    assert report.policy == 0x3001F
    assert not report.debug
    assert report.smt_allowed
    assert not report.migrate_ma
    assert report.signing_key == SigningKey.VCEK
    assert report.cpuid is None
    assert report.reported_tcb(Product.MILAN).as_dict() == {
        "bootloader": 3,
        "tee": 0,
        "snp": 8,
        "microcode": 115,
    }
    assert len(report.signed_region) == SIGNED_LEN
    ext = key_extensions(load_certificate(_read(KEYS["vcek"]), "VCEK"), Product.MILAN)
    assert ext.hwid == report.chip_id
    assert ext.product_name == "Milan-B0"


def test_parse_v3_vlek_report() -> None:
    report = parse_report(_read(REPORTS["vlek"]))
    assert report.version == 3
    assert report.signing_key == SigningKey.VLEK
    assert report.cpuid == (0x19, 0x01, 0x01)
    assert report.product_from_cpuid is Product.MILAN
    ext = key_extensions(load_certificate(_read(KEYS["vlek"]), "VLEK"), Product.MILAN)
    assert ext.csp_id is not None
    assert ext.hwid is None


@pytest.mark.parametrize("kind", ["vcek", "vlek"])
def test_real_reports_verify_to_the_pinned_milan_ark(kind: str) -> None:
    verdict = verify_report(_read(REPORTS[kind]), now=NOW, vcek=_read(KEYS[kind]))
    assert verdict.failures == ()
    assert verdict.crypto_ok
    assert verdict.product is Product.MILAN
    assert verdict.signing_key == kind


@pytest.mark.parametrize("kind", ["vcek", "vlek"])
def test_real_reports_verify_with_the_shared_milan_chain(kind: str) -> None:
    chain = _read("amd_milan_ask_ark_asvk.pem")
    verdict = verify_report(_read(REPORTS[kind]), now=NOW, vcek=_read(KEYS[kind]), chain=chain)
    assert verdict.crypto_ok, verdict.failures


@pytest.mark.parametrize("kind", ["vcek", "vlek"])
@pytest.mark.parametrize("family", ["genoa", "turin"])
def test_cross_family_chains_fail(kind: str, family: str) -> None:
    chain = _read(f"amd_{family}_ask_ark_asvk.pem")
    verdict = verify_report(_read(REPORTS[kind]), now=NOW, vcek=_read(KEYS[kind]), chain=chain)
    assert not verdict.crypto_ok
    assert "cert_chain" in _checks(verdict)


def test_pinned_products_are_amds_three_roots() -> None:
    products = pinned_products()
    assert set(products) == {Product.MILAN, Product.GENOA, Product.TURIN}
    for pc in products.values():
        assert pc.ark.subject == pc.ark.issuer
        assert pc.ask.issuer == pc.ark.subject
        assert pc.asvk.issuer == pc.ark.subject


def test_the_vlek_expires_and_then_fails() -> None:
    later = datetime(2026, 1, 1, tzinfo=UTC)
    verdict = verify_report(_read(REPORTS["vlek"]), now=later, vcek=_read(KEYS["vlek"]))
    assert _checks(verdict) == {"cert_expired"}
    assert verdict.collateral_expired


def test_the_wrong_kind_of_key_is_refused() -> None:
    verdict = verify_report(_read(REPORTS["vlek"]), now=NOW, vcek=_read(KEYS["vcek"]))
    assert {"signing_key", "report_signature"} <= _checks(verdict)


def test_no_certificate_is_vcek_missing() -> None:
    assert _checks(verify_report(_read(REPORTS["vcek"]), now=NOW, vcek=None)) == {"vcek_missing"}


@pytest.mark.parametrize("kind", ["vcek", "vlek"])
def test_every_single_byte_change_of_signed_part_or_signature_fails(kind: str) -> None:
    raw, cert = _read(REPORTS[kind]), load_certificate(_read(KEYS[kind]), kind)
    for offset in range(OFF_SIGNATURE + 2 * 72):
        for mask in (0x01, 0x80):
            mutated = bytearray(raw)
            mutated[offset] ^= mask
            verdict = verify_report(bytes(mutated), now=NOW, vcek=cert)
            assert not verdict.crypto_ok, (offset, mask)
    # The rest of the signature field is reserved: a change there is a format failure.
    mutated = bytearray(raw)
    mutated[OFF_SIGNATURE + 2 * 72] = 1
    assert _checks(verify_report(bytes(mutated), now=NOW, vcek=cert)) == {"report_format"}


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02\x00\x00\x00" + bytes(1180), bytes(1183), bytes(1185), b"x" * 1184],
)
def test_malformed_reports_are_format_failures(data: bytes) -> None:
    verdict = verify_report(data, now=NOW, vcek=_read(KEYS["vcek"]))
    assert _checks(verdict) == {"report_format"}
    with pytest.raises(ReportFormatError):
        parse_report(data)


def test_detection_tells_reports_from_dcap_quotes() -> None:
    assert looks_like_snp_report(_read(REPORTS["vcek"]))
    assert looks_like_snp_report(_read(REPORTS["vlek"]))
    dcap = (Path(__file__).parent / "vectors" / "sgx_v3_quote.bin").read_bytes()
    assert not looks_like_snp_report(dcap)
    assert not looks_like_snp_report(dcap[:1184])


def test_garbage_certificates_are_chain_failures() -> None:
    verdict = verify_report(_read(REPORTS["vcek"]), now=NOW, vcek=b"not a certificate")
    assert _checks(verdict) == {"cert_chain"}
    verdict = verify_report(
        _read(REPORTS["vcek"]), now=NOW, vcek=_read(KEYS["vcek"]), chain=b"garbage"
    )
    assert "cert_chain" in _checks(verdict)


# --- the synthetic PKI ---


@pytest.fixture(scope="module")
def pki() -> SnpPki:
    return SnpPki()


def _verify(pki: SnpPki, report: bytes, **kwargs: object) -> SnpVerdict:
    args: dict[str, object] = {"now": pki.now, "vcek": pki.vcek_der(), "chain": pki.chain_pem()}
    args.update(kwargs)
    return verify_report(report, ark=pki.ark, **args)  # type: ignore[arg-type]


def test_test_pki_verifies_only_under_its_own_ark(pki: SnpPki) -> None:
    report = pki.report()
    assert _verify(pki, report).crypto_ok
    pinned = verify_report(report, now=pki.now, vcek=pki.vcek_der(), chain=pki.chain_pem())
    assert "cert_chain" in _checks(pinned)


def test_a_report_signed_by_another_key_fails(pki: SnpPki) -> None:
    report = pki.report(key=ec.generate_private_key(ec.SECP384R1()))
    assert _checks(_verify(pki, report)) == {"report_signature"}


def test_tcb_extensions_must_match_the_reported_tcb(pki: SnpPki) -> None:
    newer = {**TCB, "snp": TCB["snp"] + 1}
    assert _checks(_verify(pki, pki.report(tcb=newer))) == {"tcb_mismatch"}


def test_a_vcek_for_another_chip_fails(pki: SnpPki) -> None:
    report = pki.report(chip_id=bytes(64))
    assert _checks(_verify(pki, report)) == {"chip_id_mismatch"}


def test_crl_revokes_the_ask(pki: SnpPki) -> None:
    report = pki.report()
    assert _verify(pki, report, crl=pki.crl()).crypto_ok
    revoked = pki.crl(revoked=(pki.ask.serial_number,))
    assert _checks(_verify(pki, report, crl=revoked)) == {"cert_revoked"}


def test_crl_freshness_and_signer(pki: SnpPki) -> None:
    report = pki.report()
    stale = _verify(pki, report, crl=pki.crl(days=1), now=pki.now + timedelta(days=3))
    assert _checks(stale) == {"crl_expired"}
    other = SnpPki(now=pki.now)
    assert _checks(_verify(pki, report, crl=other.crl())) == {"crl"}
    assert _checks(_verify(pki, report, crl=b"\x30\x03junk")) == {"crl"}


def test_an_ask_from_another_hierarchy_breaks_the_chain(pki: SnpPki) -> None:
    other = SnpPki(now=pki.now)
    verdict = _verify(pki, pki.report(), chain=other.chain_pem())
    assert "cert_chain" in _checks(verdict)


def test_synthetic_report_fields_round_trip(pki: SnpPki) -> None:
    report = parse_report(pki.report(policy=DEBUG_POLICY | POLICY_MIGRATE_MA, vmpl=2))
    assert report.debug
    assert report.migrate_ma
    assert report.vmpl == 2
    assert report.measurement == MEASUREMENT
    assert report.chip_id == CHIP_ID
    assert struct.unpack_from("<Q", pki.report(), 8)[0] == DEFAULT_POLICY


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=1300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    verdict = verify_report(data, now=NOW, vcek=_read(KEYS["vcek"]))
    assert not verdict.crypto_ok


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 1183), st.integers(1, 255), min_size=1, max_size=8))
def test_random_changes_to_a_real_report_fail(changes: dict[int, int]) -> None:
    raw = bytearray(_read(REPORTS["vcek"]))
    for offset, mask in changes.items():
        raw[offset] ^= mask
    verdict = verify_report(bytes(raw), now=NOW, vcek=_read(KEYS["vcek"]))
    assert not verdict.crypto_ok
