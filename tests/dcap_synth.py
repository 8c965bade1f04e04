"""SYNTHETIC Intel DCAP evidence for tests: TEST KEYS, NOT INTEL'S.

Builds SGX (quote version 3) quotes in the real binary layout, signed by a PCK hierarchy that
each test run generates: a test root CA, a test PCK CA, a PCK certificate carrying the real SGX
extensions (FMSPC, TCB components, PCESVN, PCEID), a TCB signing certificate, both CRLs, and TCB
info / QE identity JSON signed the way Intel signs them. Verifiers accept this evidence only when
told to trust the test root, so nothing here can pass for a production attestation.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
FMSPC = bytes.fromhex("00906ed50000")
PCE_ID = bytes.fromhex("0000")
TCB_COMPONENTS = (4, 4, 2, 4, 1, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
PCESVN = 13
QE_ISVSVN = 8

ATTR_INIT = 0x01
ATTR_DEBUG = 0x02
ATTR_MODE64BIT = 0x04


# -- a minimal DER encoder for the SGX extension ----------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        rest = part >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return _der(0x06, bytes(body))


def _int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return _der(0x02, raw)


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _entry(suffix: str, value: bytes) -> bytes:
    return _seq(_oid(f"{SGX_EXTENSIONS_OID}.{suffix}"), value)


def sgx_extension(*, fmspc: bytes, components: tuple[int, ...], pcesvn: int) -> bytes:
    tcb = [_entry(f"2.{i + 1}", _int(svn)) for i, svn in enumerate(components)]
    tcb.append(_entry("2.17", _int(pcesvn)))
    tcb.append(_entry("2.18", _der(0x04, bytes(components))))
    return _seq(
        _entry("1", _der(0x04, b"\x01" * 16)),
        _entry("2", _seq(*tcb)),
        _entry("3", _der(0x04, PCE_ID)),
        _entry("4", _der(0x04, fmspc)),
        _entry("5", _der(0x0A, b"\x00")),
    )


# -- the test PKI -----------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Escalade TEST (not Intel)"),
        ]
    )


def issue_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    now: datetime,
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_crl(
    issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: list[int], now: datetime
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - timedelta(days=1))
        .next_update(now + timedelta(days=30))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - timedelta(days=1))
            .build()
        )
    return builder.sign(key, hashes.SHA256())


def pem_chain(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- report bodies and quotes -----------------------------------------------------------------


def report_body(
    *,
    mr_enclave: bytes,
    mr_signer: bytes,
    isv_prod_id: int,
    isv_svn: int,
    report_data: bytes,
    attributes_flags: int = ATTR_INIT | ATTR_MODE64BIT,
    cpu_svn: bytes = bytes(TCB_COMPONENTS),
    misc_select: int = 0,
) -> bytes:
    body = (
        cpu_svn
        + struct.pack("<I", misc_select)
        + bytes(28)
        + struct.pack("<Q", attributes_flags)
        + struct.pack("<Q", 0xE7)  # XFRM
        + mr_enclave
        + bytes(32)
        + mr_signer
        + bytes(96)
        + struct.pack("<HH", isv_prod_id, isv_svn)
        + bytes(60)
        + report_data.ljust(64, b"\x00")
    )
    assert len(body) == 384
    return body


@dataclass
class SyntheticPki:
    """A throwaway DCAP PKI: generate one per test session, trust its root in the verifier."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    revoke_pck: bool = False

    def __post_init__(self) -> None:
        now = self.now
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = issue_cert(
            "Escalade TEST SGX Root CA", self.root_key, None, self.root_key, ca=True, now=now
        )
        self.pck_ca_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_ca = issue_cert(
            "Escalade TEST SGX PCK Processor CA",
            self.pck_ca_key,
            self.root,
            self.root_key,
            ca=True,
            now=now,
        )
        self.pck_key = ec.generate_private_key(ec.SECP256R1())
        extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSIONS_OID),
            sgx_extension(fmspc=FMSPC, components=TCB_COMPONENTS, pcesvn=PCESVN),
        )
        self.pck = issue_cert(
            "Escalade TEST SGX PCK Certificate",
            self.pck_key,
            self.pck_ca,
            self.pck_ca_key,
            ca=False,
            now=now,
            extra=[extension],
        )
        self.tcb_key = ec.generate_private_key(ec.SECP256R1())
        self.tcb_signer = issue_cert(
            "Escalade TEST SGX TCB Signing",
            self.tcb_key,
            self.root,
            self.root_key,
            ca=False,
            now=now,
        )
        self.attestation_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def quote(
        self,
        *,
        report_data: bytes,
        mr_enclave: bytes = b"\xe1" * 32,
        mr_signer: bytes = b"\x51" * 32,
        isv_prod_id: int = 7,
        isv_svn: int = 3,
        debug: bool = False,
    ) -> bytes:
        flags = ATTR_INIT | ATTR_MODE64BIT | (ATTR_DEBUG if debug else 0)
        header = struct.pack("<HHIHH", 3, 2, 0, QE_ISVSVN, PCESVN) + INTEL_QE_VENDOR_ID + bytes(20)
        body = report_body(
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            report_data=report_data,
            attributes_flags=flags,
        )
        signature = raw_signature(self.attestation_key, header + body)
        attestation_key = _raw_public(self.attestation_key)
        auth_data = bytes(range(32))
        qe_report = report_body(
            mr_enclave=b"\x0e" * 32,
            mr_signer=QE_MRSIGNER,
            isv_prod_id=1,
            isv_svn=QE_ISVSVN,
            report_data=hashlib.sha256(attestation_key + auth_data).digest(),
            attributes_flags=0x11,
        )
        qe_signature = raw_signature(self.pck_key, qe_report)
        chain = pem_chain(self.pck, self.pck_ca, self.root).encode()
        signature_data = (
            signature
            + attestation_key
            + qe_report
            + qe_signature
            + struct.pack("<H", len(auth_data))
            + auth_data
            + struct.pack("<HI", 5, len(chain))
            + chain
        )
        return header + body + struct.pack("<I", len(signature_data)) + signature_data

    def collateral(
        self, *, tcb_status: str = "UpToDate", advisories: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """Collateral in the shape of the shared samples (and of PCCS answers)."""
        now = self.now
        issue, next_update = _iso(now - timedelta(days=1)), _iso(now + timedelta(days=30))
        level: dict[str, object] = {
            "tcb": {
                "sgxtcbcomponents": [{"svn": svn} for svn in TCB_COMPONENTS],
                "pcesvn": PCESVN,
            },
            "tcbDate": "2024-03-13T00:00:00Z",
            "tcbStatus": tcb_status,
        }
        if advisories:
            level["advisoryIDs"] = list(advisories)
        tcb_info = json.dumps(
            {
                "id": "SGX",
                "version": 3,
                "issueDate": issue,
                "nextUpdate": next_update,
                "fmspc": FMSPC.hex(),
                "pceId": PCE_ID.hex(),
                "tcbType": 0,
                "tcbEvaluationDataNumber": 17,
                "tcbLevels": [level],
            },
            separators=(",", ":"),
        )
        qe_identity = json.dumps(
            {
                "id": "QE",
                "version": 2,
                "issueDate": issue,
                "nextUpdate": next_update,
                "tcbEvaluationDataNumber": 17,
                "miscselect": "00000000",
                "miscselectMask": "FFFFFFFF",
                "attributes": "11000000000000000000000000000000",
                "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
                "mrsigner": QE_MRSIGNER.hex().upper(),
                "isvprodid": 1,
                "tcbLevels": [
                    {
                        "tcb": {"isvsvn": QE_ISVSVN},
                        "tcbDate": "2024-03-13T00:00:00Z",
                        "tcbStatus": "UpToDate",
                    }
                ],
            },
            separators=(",", ":"),
        )
        revoked = [self.pck.serial_number] if self.revoke_pck else []
        return {
            "pck_crl_issuer_chain": pem_chain(self.pck_ca, self.root),
            "root_ca_crl": make_crl(self.root, self.root_key, [], now)
            .public_bytes(serialization.Encoding.DER)
            .hex(),
            "pck_crl": make_crl(self.pck_ca, self.pck_ca_key, revoked, now)
            .public_bytes(serialization.Encoding.DER)
            .hex(),
            "tcb_info_issuer_chain": pem_chain(self.tcb_signer, self.root),
            "tcb_info": tcb_info,
            "tcb_info_signature": raw_signature(self.tcb_key, tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": pem_chain(self.tcb_signer, self.root),
            "qe_identity": qe_identity,
            "qe_identity_signature": raw_signature(self.tcb_key, qe_identity.encode()).hex(),
        }
