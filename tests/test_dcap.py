"""Offline DCAP verification against real Intel vectors (tests/vectors, from dcap-qvl).

Besides the real vectors, a small synthetic PKI (test root -> PCK CA -> PCK leaf carrying the
real leaf's SGX extension; TCB signing cert; CRLs) re-issues the SGX quote's certification data
so that revocation, mismatch and TCB-convergence paths can be exercised with `root_ca=`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from dcap_synth import issue_cert, make_crl, pem_chain, raw_signature

from attestation.dcap import (
    Collateral,
    CollateralFormatError,
    DcapVerdict,
    EnclaveReport,
    Quote,
    QuoteFormatError,
    TdReport,
    load_intel_root_ca,
    parse_pck_extensions,
    parse_quote,
    prepare_collateral,
    verify_quote,
)
from attestation.dcap import tcb as tcb_mod
from attestation.dcap.certs import parse_pem_chain

VECTORS = Path(__file__).parent / "vectors"
NOW = datetime(2025, 7, 1, tzinfo=UTC)
AFTER_EXPIRY = datetime(2025, 9, 1, tzinfo=UTC)
SAMPLES = ("sgx_v3", "tdx_v4")


def _quote_bytes(name: str) -> bytes:
    return (VECTORS / f"{name}_quote.bin").read_bytes()


def _collateral_json(name: str) -> dict[str, object]:
    obj: dict[str, object] = json.loads((VECTORS / f"{name}_collateral.json").read_text())
    return obj


def _collateral(name: str) -> Collateral:
    return Collateral.from_json(_collateral_json(name))


def _checks(verdict: DcapVerdict) -> set[str]:
    return {f.check for f in verdict.failures}


# --- parsing ---


def test_parse_sgx_v3() -> None:
    q = parse_quote(_quote_bytes("sgx_v3"))
    assert (q.version, q.tee_type, q.attestation_key_type) == (3, "sgx", 2)
    assert q.certification_data_type == 5
    assert q.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert isinstance(q.body, EnclaveReport)
    assert q.body.report_data.startswith(b"Hello, world!")
    assert len(q.body.report_data) == 64
    assert len(q.body.mr_enclave) == 32
    assert len(q.body.mr_signer) == 32
    assert len(q.body.attributes) == 16
    assert not q.body.debug
    assert len(q.signed_region) == 48 + 384
    assert len(q.signature) == 64
    assert len(q.attestation_key) == 64
    assert len(q.qe_report_raw) == 384
    assert q.qe_report.isv_prod_id == 1
    assert not q.qe_report.debug
    assert q.pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    chain = parse_pem_chain(q.pck_chain_pem)
    assert len(chain) == 3
    ext = parse_pck_extensions(chain[0])
    assert ext.fmspc.hex().upper() == "00A067110000"
    assert ext.pce_id == b"\x00\x00"
    assert ext.pce_svn == 13
    assert ext.tcb_components[:6] == (11, 11, 2, 2, 255, 1)


def test_parse_tdx_v4() -> None:
    q = parse_quote(_quote_bytes("tdx_v4"))
    assert (q.version, q.tee_type) == (4, "tdx")
    # TDX v4 wraps the QE report and the PEM chain in type-6 certification data.
    assert q.certification_data_type == 6
    assert isinstance(q.body, TdReport)
    td = q.body
    assert len(q.signed_region) == 48 + 584
    assert td.mr_td.hex().startswith("91eb2b44d141d4ec")
    for field in (td.mr_td, td.mr_seam, td.mr_config_id, td.mr_owner, *td.rtmrs):
        assert len(field) == 48
    assert td.rtmrs == (td.rtmr0, td.rtmr1, td.rtmr2, td.rtmr3)
    assert len(td.report_data) == 64
    assert td.tee_tcb_svn.hex() == "06010300000000000000000000000000"
    assert not td.debug
    assert td.tee_tcb_svn2 is None
    assert len(q.qe_auth_data) == 32
    ext = parse_pck_extensions(parse_pem_chain(q.pck_chain_pem)[0])
    assert ext.fmspc.hex().upper() == "B0C06F000000"


def test_debug_flags_follow_attribute_bits() -> None:
    sgx = parse_quote(_quote_bytes("sgx_v3")).body
    assert isinstance(sgx, EnclaveReport)
    assert replace(sgx, attributes=b"\x07" + sgx.attributes[1:]).debug
    td = parse_quote(_quote_bytes("tdx_v4")).body
    assert isinstance(td, TdReport)
    assert replace(td, td_attributes=b"\x01" + td.td_attributes[1:]).debug


def test_root_ca_is_pinned() -> None:
    root = load_intel_root_ca()
    der = root.public_bytes(Encoding.DER)
    assert der == (VECTORS / "intel_sgx_root_ca.der").read_bytes()
    assert hashlib.sha256(der).hexdigest().startswith("44a0196b")


# --- verdicts on the real vectors ---


def test_sgx_v3_verdict() -> None:
    v = verify_quote(_quote_bytes("sgx_v3"), now=NOW, collateral=_collateral("sgx_v3"))
    assert v.failures == ()
    assert v.crypto_ok
    assert (v.tee, v.quote_version) == ("sgx", 3)
    assert v.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert {"INTEL-SA-00289", "INTEL-SA-00615"} <= set(v.advisory_ids)
    assert v.fmspc == "00A067110000"
    assert not v.collateral_expired
    assert v.quote is not None
    assert v.quote.body.report_data.startswith(b"Hello, world!")


def test_tdx_v4_verdict() -> None:
    v = verify_quote(_quote_bytes("tdx_v4"), now=NOW, collateral=_collateral("tdx_v4"))
    assert v.failures == ()
    assert v.crypto_ok
    assert (v.tee, v.quote_version) == ("tdx", 4)
    assert v.tcb_status == "UpToDate"
    assert v.fmspc == "B0C06F000000"
    assert not v.collateral_expired


@pytest.mark.parametrize("name", SAMPLES)
def test_expired_collateral(name: str) -> None:
    v = verify_quote(_quote_bytes(name), now=AFTER_EXPIRY, collateral=_collateral(name))
    assert not v.crypto_ok
    assert v.collateral_expired
    assert {"tcb_info_expired", "qe_identity_expired", "crl_expired"} <= _checks(v)
    # Stale collateral is the only problem: the evidence itself still verifies.
    assert _checks(v) <= {"tcb_info_expired", "qe_identity_expired", "crl_expired"}


@pytest.mark.parametrize("name", SAMPLES)
def test_before_collateral_issue_date_is_a_failure(name: str) -> None:
    v = verify_quote(
        _quote_bytes(name), now=datetime(2025, 6, 1, tzinfo=UTC), collateral=_collateral(name)
    )
    assert {"tcb_info_expired", "qe_identity_expired", "crl_expired"} <= _checks(v)


@pytest.mark.parametrize("name", SAMPLES)
def test_without_collateral(name: str) -> None:
    v = verify_quote(_quote_bytes(name), now=NOW)
    assert v.crypto_ok
    assert v.tcb_status == "Unknown"
    assert v.advisory_ids == ()
    assert v.fmspc is not None
    assert not v.collateral_expired


@pytest.mark.parametrize("name", SAMPLES)
def test_without_collateral_chain_expiry_still_checked(name: str) -> None:
    v = verify_quote(_quote_bytes(name), now=datetime(2050, 1, 1, tzinfo=UTC))
    assert "pck_chain_expired" in _checks(v)


def test_prepared_collateral_and_parsed_quote_give_same_verdict() -> None:
    raw = _quote_bytes("sgx_v3")
    prepared = prepare_collateral(_collateral("sgx_v3"))
    a = verify_quote(raw, now=NOW, collateral=prepared)
    b = verify_quote(parse_quote(raw), now=NOW, collateral=prepared)
    assert a.crypto_ok
    assert b.crypto_ok
    assert (a.tcb_status, a.advisory_ids) == (b.tcb_status, b.advisory_ids)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_quote(_quote_bytes("sgx_v3"), now=datetime(2025, 7, 1))


def test_wrong_collateral_for_quote() -> None:
    v = verify_quote(_quote_bytes("sgx_v3"), now=NOW, collateral=_collateral("tdx_v4"))
    assert {"tcb_info_mismatch", "fmspc_mismatch", "qe_identity_mismatch", "pck_crl"} <= _checks(v)
    assert v.tcb_status == "Unknown"


# --- tampering: every byte that matters, flipped, must be rejected without an exception ---


def _flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << (pos % 8)
    return bytes(out)


def _regions(raw: bytes, q: Quote) -> dict[str, range]:
    def span(part: bytes) -> range:
        start = raw.index(part)
        return range(start, start + len(part))

    sig_start = len(q.signed_region) + 4
    return {
        "signed_region": range(len(q.signed_region)),
        "signature": range(sig_start, sig_start + 64),
        "attestation_key": range(sig_start + 64, sig_start + 128),
        "qe_report": span(q.qe_report_raw),
        "qe_report_signature": span(q.qe_report_signature),
        "qe_auth_data": span(q.qe_auth_data),
        "pck_chain": span(q.pck_chain_pem),
    }


def _accepted_flips(raw: bytes, positions: range | list[int], collateral: object) -> list[int]:
    accepted = []
    for pos in positions:
        verdict = verify_quote(_flip(raw, pos), now=NOW, collateral=collateral)  # type: ignore[arg-type]
        # A crash caught by the safety net would also be "not ok"; it must not hide here.
        assert "verification_error" not in _checks(verdict), (pos, verdict.failures)
        if verdict.crypto_ok:
            accepted.append(pos)
    return accepted


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    "region",
    [
        "signed_region",
        "signature",
        "attestation_key",
        "qe_report",
        "qe_report_signature",
        "qe_auth_data",
    ],
)
def test_every_flip_is_rejected(name: str, region: str) -> None:
    raw = _quote_bytes(name)
    positions = _regions(raw, parse_quote(raw))[region]
    assert _accepted_flips(raw, positions, prepare_collateral(_collateral(name))) == []


@pytest.mark.parametrize("name", SAMPLES)
def test_pck_chain_flips_are_rejected(name: str) -> None:
    raw = _quote_bytes(name)
    positions = _regions(raw, parse_quote(raw))["pck_chain"]
    # Every byte of the chain text; no collateral needed, the chain is checked regardless.
    assert _accepted_flips(raw, positions, None) == []


@pytest.mark.parametrize("name", SAMPLES)
def test_certification_data_header_flips_are_rejected(name: str) -> None:
    raw = _quote_bytes(name)
    q = parse_quote(raw)
    pem_start = raw.index(q.pck_chain_pem)
    # Type and size fields just before the PEM chain, and the signature_data_len field.
    positions = [
        *range(pem_start - 6, pem_start),
        *range(len(q.signed_region), len(q.signed_region) + 4),
    ]
    assert _accepted_flips(raw, positions, None) == []


def test_flip_verdict_names_the_check() -> None:
    raw = _quote_bytes("sgx_v3")
    q = parse_quote(raw)
    regions = _regions(raw, q)
    col = prepare_collateral(_collateral("sgx_v3"))
    body_flip = verify_quote(_flip(raw, 48 + 320), now=NOW, collateral=col)  # report_data
    assert _checks(body_flip) == {"quote_signature"}
    qe_flip = verify_quote(_flip(raw, regions["qe_report"][0]), now=NOW, collateral=col)
    assert _checks(qe_flip) == {"qe_report_signature"}
    key_flip = verify_quote(_flip(raw, regions["attestation_key"][5]), now=NOW, collateral=col)
    assert "qe_report_binding" in _checks(key_flip)
    auth_flip = verify_quote(_flip(raw, regions["qe_auth_data"][0]), now=NOW, collateral=col)
    assert _checks(auth_flip) == {"qe_report_binding"}


def test_v5_and_sgx_v4_layouts_parse() -> None:
    # No real v5 / SGX v4 vectors: re-frame the real quotes. Only the quote signature (over
    # the changed header) can fail; the QE report, binding and PCK chain are reused intact.
    tdx = _quote_bytes("tdx_v4")
    q4 = parse_quote(tdx)
    v5 = b"\x05\x00" + tdx[2:48] + struct.pack("<HI", 2, 584) + tdx[48:]
    q5 = parse_quote(v5)
    assert (q5.version, q5.tee_type, q5.body) == (5, "tdx", q4.body)
    assert len(q5.signed_region) == 48 + 6 + 584
    assert q5.pck_chain_pem == q4.pck_chain_pem
    assert _checks(verify_quote(v5, now=NOW)) == {"quote_signature"}

    sgx = _quote_bytes("sgx_v3")
    q3 = parse_quote(sgx)
    qe_section = (
        q3.qe_report_raw
        + q3.qe_report_signature
        + struct.pack("<H", len(q3.qe_auth_data))
        + q3.qe_auth_data
        + struct.pack("<HI", 5, len(q3.pck_chain_pem))
        + q3.pck_chain_pem
    )
    sig_data = (
        q3.signature + q3.attestation_key + struct.pack("<HI", 6, len(qe_section)) + qe_section
    )
    v4 = b"\x04\x00" + sgx[2:432] + struct.pack("<I", len(sig_data)) + sig_data
    q4s = parse_quote(v4)
    assert (q4s.version, q4s.tee_type, q4s.certification_data_type) == (4, "sgx", 6)
    assert q4s.qe_report == q3.qe_report
    assert _checks(verify_quote(v4, now=NOW)) == {"quote_signature"}


# --- malformed quotes ---


@pytest.mark.parametrize("name", SAMPLES)
def test_truncations_are_format_failures(name: str) -> None:
    raw = _quote_bytes(name)
    q = parse_quote(raw)
    sig_len = struct.unpack_from("<I", raw, len(q.signed_region))[0]
    end = len(q.signed_region) + 4 + sig_len  # beyond this only ignored trailing bytes remain
    for length in range(end):
        verdict = verify_quote(raw[:length], now=NOW)
        assert _checks(verdict) == {"quote_format"}, length
        assert verdict.quote is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00" * 48,
        b"\xff" * 5000,
        bytes(range(256)) * 20,
        b"\x03\x00\x02\x00" + b"\x00" * 2000,
        b"\x04\x00\x02\x00\x81\x00\x00\x00" + b"\x00" * 700,
    ],
)
def test_garbage_is_a_format_failure(garbage: bytes) -> None:
    verdict = verify_quote(garbage, now=NOW, collateral=_collateral("sgx_v3"))
    assert "quote_format" in _checks(verdict)
    assert verdict.tee == "unknown"
    with pytest.raises(QuoteFormatError):
        parse_quote(garbage)


def test_non_bytes_quote_is_a_format_failure() -> None:
    verdict = verify_quote("not bytes", now=NOW)  # type: ignore[arg-type]
    assert _checks(verdict) == {"quote_format"}


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("extra", [b"", b"\x00" * 16, b"\x01", bytes(range(256)) * 4])
def test_trailing_bytes_are_ignored_and_counted(name: str, extra: bytes) -> None:
    raw = _quote_bytes(name)
    base = verify_quote(raw, now=NOW, collateral=_collateral(name))
    verdict = verify_quote(raw + extra, now=NOW, collateral=_collateral(name))
    assert verdict.crypto_ok
    assert verdict.trailing_bytes == base.trailing_bytes + len(extra)
    assert verdict.tcb_status == base.tcb_status
    # Never part of a signed or measured value.
    assert verdict.quote is not None
    assert base.quote is not None
    assert verdict.quote.signed_region == base.quote.signed_region
    assert verdict.quote.body == base.quote.body


def test_unsupported_fields_are_named() -> None:
    raw = bytearray(_quote_bytes("sgx_v3"))
    raw[2] = 3  # attestation key type ECDSA-384
    with pytest.raises(QuoteFormatError, match="attestation key type"):
        parse_quote(bytes(raw))
    raw = bytearray(_quote_bytes("sgx_v3"))
    raw[0] = 9
    with pytest.raises(QuoteFormatError, match="version 9"):
        parse_quote(bytes(raw))


# --- trust anchor ---


@pytest.mark.parametrize("name", SAMPLES)
def test_wrong_root_ca(name: str) -> None:
    fake_key = ec.generate_private_key(ec.SECP256R1())
    fake_root = issue_cert("Intel SGX Root CA", fake_key, None, fake_key, ca=True, now=NOW)
    v = verify_quote(_quote_bytes(name), now=NOW, collateral=_collateral(name), root_ca=fake_root)
    assert not v.crypto_ok
    assert {"pck_chain", "tcb_info_chain", "qe_identity_chain", "root_ca_crl"} <= _checks(v)
    v = verify_quote(_quote_bytes(name), now=NOW, root_ca=fake_root)
    assert "pck_chain" in _checks(v)


# --- collateral parsing ---


def test_collateral_from_json_errors() -> None:
    obj = _collateral_json("sgx_v3")
    missing = {k: v for k, v in obj.items() if k != "tcb_info"}
    with pytest.raises(CollateralFormatError, match="tcb_info"):
        Collateral.from_json(missing)
    with pytest.raises(CollateralFormatError, match="pck_crl"):
        Collateral.from_json({**obj, "pck_crl": "zz"})
    with pytest.raises(CollateralFormatError, match="tcb_info_signature"):
        Collateral.from_json({**obj, "tcb_info_signature": "abcd"})
    with pytest.raises(CollateralFormatError, match="qe_identity"):
        Collateral.from_json({**obj, "qe_identity": 5})
    with pytest.raises(CollateralFormatError):
        Collateral.from_json([])  # type: ignore[arg-type]


def test_collateral_accepts_pem_crl_der() -> None:
    obj = _collateral_json("sgx_v3")
    crl = x509.load_der_x509_crl(bytes.fromhex(str(obj["root_ca_crl"])))
    pem = crl.public_bytes(Encoding.PEM).decode()
    assert Collateral.from_json({**obj, "root_ca_crl": pem}) == _collateral("sgx_v3")


def test_tampered_collateral_documents() -> None:
    c = _collateral("sgx_v3")
    tcb = c.tcb_info.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"', 1)
    qe = c.qe_identity.replace('"isvprodid":1', '"isvprodid":2')
    v = verify_quote(
        _quote_bytes("sgx_v3"), now=NOW, collateral=replace(c, tcb_info=tcb, qe_identity=qe)
    )
    assert {"tcb_info_signature", "qe_identity_signature", "qe_identity_mismatch"} <= _checks(v)
    bad = replace(c, tcb_info="{not json", pck_crl=b"\x30\x00", tcb_info_issuer_chain="junk")
    v = verify_quote(_quote_bytes("sgx_v3"), now=NOW, collateral=bad)
    assert {"collateral_format", "tcb_info_chain", "tcb_info_signature"} <= _checks(v)
    assert v.tcb_status == "Unknown"


# --- synthetic PKI: revocation, mismatches, TCB convergence ---


def _crl_der(
    issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: tuple[int, ...]
) -> bytes:
    return make_crl(issuer, key, list(revoked), NOW).public_bytes(Encoding.DER)


@dataclass
class ResignedSamplePki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    quote: bytes
    base: Collateral

    def collateral(
        self,
        *,
        tcb_info: str | None = None,
        qe_identity: str | None = None,
        pck_revoked: tuple[int, ...] = (),
        root_revoked: tuple[int, ...] = (),
        pck_crl_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Collateral:
        tcb_text = tcb_info if tcb_info is not None else self.base.tcb_info
        qe_text = qe_identity if qe_identity is not None else self.base.qe_identity
        chain = pem_chain(self.signer, self.root)
        return Collateral(
            pck_crl=_crl_der(self.ca, pck_crl_key or self.ca_key, pck_revoked),
            pck_crl_issuer_chain=pem_chain(self.ca, self.root),
            root_ca_crl=_crl_der(self.root, self.root_key, root_revoked),
            tcb_info=tcb_text,
            tcb_info_signature=raw_signature(self.signer_key, tcb_text.encode()),
            tcb_info_issuer_chain=chain,
            qe_identity=qe_text,
            qe_identity_signature=raw_signature(self.signer_key, qe_text.encode()),
            qe_identity_issuer_chain=chain,
        )

    def verify(self, collateral: Collateral) -> DcapVerdict:
        return verify_quote(self.quote, now=NOW, collateral=collateral, root_ca=self.root)


@pytest.fixture(scope="module")
def pki() -> ResignedSamplePki:
    raw = _quote_bytes("sgx_v3")
    q = parse_quote(raw)
    real_leaf = parse_pem_chain(q.pck_chain_pem)[0]
    sgx_ext = real_leaf.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.2.840.113741.1.13.1")
    ).value
    root_key, ca_key, leaf_key, signer_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    root = issue_cert("Test SGX Root CA", root_key, None, root_key, ca=True, now=NOW)
    ca = issue_cert("Test SGX PCK Processor CA", ca_key, root, root_key, ca=True, now=NOW)
    leaf = issue_cert(
        "Test SGX PCK Certificate", leaf_key, ca, ca_key, ca=False, now=NOW, extra=[sgx_ext]
    )
    signer = issue_cert("Test SGX TCB Signing", signer_key, root, root_key, ca=False, now=NOW)
    # Re-issue the v3 signature data with the new chain and a QE report signed by the new PCK
    # key; the quote signature and QE binding are untouched.
    pem = pem_chain(leaf, ca, root).encode() + b"\x00"
    sig_data = (
        q.signature
        + q.attestation_key
        + q.qe_report_raw
        + raw_signature(leaf_key, q.qe_report_raw)
        + struct.pack("<H", len(q.qe_auth_data))
        + q.qe_auth_data
        + struct.pack("<HI", 5, len(pem))
        + pem
    )
    quote = q.signed_region + struct.pack("<I", len(sig_data)) + sig_data
    return ResignedSamplePki(
        root, root_key, ca, ca_key, leaf, signer, signer_key, quote, _collateral("sgx_v3")
    )


def test_synthetic_pki_baseline(pki: ResignedSamplePki) -> None:
    v = pki.verify(pki.collateral())
    assert v.failures == ()
    assert v.tcb_status == "ConfigurationAndSWHardeningNeeded"
    # The same quote against the real Intel root fails on its chain only.
    assert _checks(verify_quote(pki.quote, now=NOW)) == {"pck_chain"}


def test_revoked_pck_leaf(pki: ResignedSamplePki) -> None:
    v = pki.verify(pki.collateral(pck_revoked=(pki.leaf.serial_number,)))
    assert _checks(v) == {"pck_revoked"}


def test_revoked_pck_ca(pki: ResignedSamplePki) -> None:
    v = pki.verify(pki.collateral(root_revoked=(pki.ca.serial_number,)))
    assert _checks(v) == {"pck_ca_revoked"}


def test_revoked_tcb_signer(pki: ResignedSamplePki) -> None:
    v = pki.verify(pki.collateral(root_revoked=(pki.signer.serial_number,)))
    assert _checks(v) == {"tcb_info_chain", "qe_identity_chain"}


def test_pck_crl_signed_by_someone_else(pki: ResignedSamplePki) -> None:
    v = pki.verify(pki.collateral(pck_crl_key=ec.generate_private_key(ec.SECP256R1())))
    assert _checks(v) == {"pck_crl"}


def _edit_json(text: str, edit: Callable[[dict[str, object]], None]) -> str:
    obj: dict[str, object] = json.loads(text)
    edit(obj)
    return json.dumps(obj)


def test_fmspc_mismatch(pki: ResignedSamplePki) -> None:
    tcb = _edit_json(pki.base.tcb_info, lambda o: o.update(fmspc="00A067110001"))
    v = pki.verify(pki.collateral(tcb_info=tcb))
    assert _checks(v) == {"fmspc_mismatch"}
    assert v.tcb_status == "Unknown"


def test_tcb_level_not_found(pki: ResignedSamplePki) -> None:
    def raise_pcesvn(o: dict[str, object]) -> None:
        levels = o["tcbLevels"]
        assert isinstance(levels, list)
        for level in levels:
            level["tcb"]["pcesvn"] = 99

    v = pki.verify(pki.collateral(tcb_info=_edit_json(pki.base.tcb_info, raise_pcesvn)))
    assert _checks(v) == {"tcb_level_not_found"}
    assert v.tcb_status == "Unknown"


def test_qe_identity_mismatch(pki: ResignedSamplePki) -> None:
    qe = _edit_json(pki.base.qe_identity, lambda o: o.update(mrsigner="00" * 32))
    v = pki.verify(pki.collateral(qe_identity=qe))
    assert _checks(v) == {"qe_identity_mismatch"}


def test_qe_out_of_date_converges_with_platform(pki: ResignedSamplePki) -> None:
    # QE ISVSVN is 10: make 11 the UpToDate level so the QE lands on OutOfDate.
    def bump(o: dict[str, object]) -> None:
        o["tcbLevels"] = [
            {"tcb": {"isvsvn": 11}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
            {
                "tcb": {"isvsvn": 8},
                "tcbDate": "2023-03-13T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": ["INTEL-SA-99999"],
            },
        ]

    v = pki.verify(pki.collateral(qe_identity=_edit_json(pki.base.qe_identity, bump)))
    assert v.failures == ()
    assert v.tcb_status == "OutOfDateConfigurationNeeded"
    assert v.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615", "INTEL-SA-99999")


def test_tcb_info_v2_is_understood(pki: ResignedSamplePki) -> None:
    def to_v2(o: dict[str, object]) -> None:
        o["version"] = 2
        o.pop("id")
        levels = o["tcbLevels"]
        assert isinstance(levels, list)
        for level in levels:
            comps = level["tcb"].pop("sgxtcbcomponents")
            for i, comp in enumerate(comps, start=1):
                level["tcb"][f"sgxtcbcomp{i:02d}svn"] = comp["svn"]

    v = pki.verify(pki.collateral(tcb_info=_edit_json(pki.base.tcb_info, to_v2)))
    assert v.failures == ()
    assert v.tcb_status == "ConfigurationAndSWHardeningNeeded"


# --- TCB evaluation units ---


def test_converge() -> None:
    assert tcb_mod.converge("UpToDate", "OutOfDate") == "OutOfDate"
    assert tcb_mod.converge("SWHardeningNeeded", "OutOfDate") == "OutOfDate"
    assert tcb_mod.converge("ConfigurationNeeded", "OutOfDate") == "OutOfDateConfigurationNeeded"
    assert tcb_mod.converge("OutOfDate", "UpToDate") == "OutOfDate"
    assert tcb_mod.converge("UpToDate", "Revoked") == "Revoked"
    assert tcb_mod.converge("SWHardeningNeeded", "UpToDate") == "SWHardeningNeeded"


def test_tdx_level_matching_uses_tee_tcb_svn() -> None:
    info = tcb_mod.parse_tcb_info(str(_collateral_json("tdx_v4")["tcb_info"]))
    sgx = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
    good = bytes.fromhex("06010300000000000000000000000000")
    level = tcb_mod.match_platform_level(info, sgx, 11, good)
    assert level is not None
    assert level.status == "UpToDate"
    # TDX late microcode SVN (index 2) below every level's minimum: no level.
    low = bytes.fromhex("06010100000000000000000000000000")
    assert tcb_mod.match_platform_level(info, sgx, 11, low) is None
    module = tcb_mod.tdx_module_identity(info, good)
    assert module is not None
    assert module.id == "TDX_01"
    assert tcb_mod.match_isv_level(module.levels, 3) is not None
    assert tcb_mod.match_isv_level(module.levels, 1) is None


# --- performance (measured, loosely bounded so slow CI machines do not flake) ---


def test_repeat_verification_is_cheap() -> None:
    raw = _quote_bytes("tdx_v4")
    prepared = prepare_collateral(_collateral("tdx_v4"))
    verify_quote(raw, now=NOW, collateral=prepared)
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        assert verify_quote(raw, now=NOW, collateral=prepared).crypto_ok
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 0.05, f"{per_call * 1e3:.1f} ms per verify_quote"
