"""SYNTHETIC AMD SEV-SNP evidence for tests: TEST KEYS, NOT AMD'S.

A test ARK (RSA, self-signed with RSA-PSS SHA-384 salt 48, named "ARK-Milan" like AMD's), an
ASK under it, and VCEKs (ECDSA P-384) carrying AMD's extensions (product name, TCB SPLs,
hwID). Reports are built in the real 1,184-byte layout and signed the way the AMD secure
processor signs them (r and s little-endian, 72 bytes each). Verifiers accept them only when
told to trust the test ARK, so nothing here passes for production evidence.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.snp.report import (
    OFF_CHIP_ID,
    OFF_CPUID_FAM,
    OFF_KEY_INFO,
    OFF_MEASUREMENT,
    OFF_PLATFORM_INFO,
    OFF_POLICY,
    OFF_REPORT_DATA,
    OFF_REPORTED_TCB,
    OFF_SIGNATURE,
    OFF_SIGNATURE_ALGO,
    OFF_VMPL,
    POLICY_DEBUG,
    POLICY_RESERVED_ONE,
    POLICY_SMT,
    REPORT_LEN,
    SIGNED_LEN,
)

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
AMD = "1.3.6.1.4.1.3704.1"
DEFAULT_POLICY = 0x1F | POLICY_SMT | POLICY_RESERVED_ONE  # 0x3001F, as the real sample
TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
CHIP_ID = bytes(range(64))
MEASUREMENT = bytes.fromhex("ab" * 48)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TEST KEYS, not Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _der_int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(raw)]) + raw


def _der_ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode()


def _ext(oid: str, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)


@dataclass
class SnpPki:
    """One test hierarchy; `now` sits inside every certificate's validity."""

    now: datetime = field(default_factory=lambda: datetime(2025, 6, 1, tzinfo=UTC))
    ark_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ask_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    vcek_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.ark = self._issue("ARK-Milan", self.ark_key.public_key(), "ARK-Milan", self.ark_key)
        self.ask = self._issue("SEV-Milan", self.ask_key.public_key(), "ARK-Milan", self.ark_key)
        self.vcek = self.issue_vcek()

    def _issue(
        self,
        cn: str,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        issuer_cn: str,
        issuer_key: rsa.RSAPrivateKey,
        *,
        extensions: tuple[x509.UnrecognizedExtension, ...] = (),
        serial: int = 1,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(issuer_cn))
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(self.now - timedelta(days=30))
            .not_valid_after(self.now + timedelta(days=365))
        )
        for ext in extensions:
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)

    def issue_vcek(
        self, *, tcb: dict[str, int] | None = None, chip_id: bytes = CHIP_ID, serial: int = 7
    ) -> x509.Certificate:
        spl = tcb or TCB
        extensions = (
            _ext(f"{AMD}.1", _der_int(0)),
            _ext(f"{AMD}.2", _der_ia5("Milan-B0")),
            _ext(f"{AMD}.3.1", _der_int(spl["bootloader"])),
            _ext(f"{AMD}.3.2", _der_int(spl["tee"])),
            _ext(f"{AMD}.3.3", _der_int(spl["snp"])),
            _ext(f"{AMD}.3.8", _der_int(spl["microcode"])),
            _ext(f"{AMD}.4", chip_id),
        )
        return self._issue(
            "SEV-VCEK",
            self.vcek_key.public_key(),
            "SEV-Milan",
            self.ask_key,
            extensions=extensions,
            serial=serial,
        )

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.ask, self.ark))

    def ark_pem(self) -> bytes:
        return self.ark.public_bytes(serialization.Encoding.PEM)

    def vcek_der(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.DER)

    def crl(self, *, revoked: tuple[int, ...] = (), days: float = 7) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(self.now - timedelta(days=1))
            .next_update(self.now + timedelta(days=days))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.now - timedelta(days=2))
                .build()
            )
        crl = builder.sign(self.ark_key, hashes.SHA384(), rsa_padding=PSS)
        return crl.public_bytes(serialization.Encoding.DER)

    def report(
        self,
        *,
        report_data: bytes = bytes(64),
        measurement: bytes = MEASUREMENT,
        policy: int = DEFAULT_POLICY,
        vmpl: int = 0,
        tcb: dict[str, int] | None = None,
        platform_info: int = 0,
        chip_id: bytes = CHIP_ID,
        version: int = 3,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """A signed v2/v3 report (v3 carries Milan's CPUID: family 19h, model 1)."""
        spl = tcb or TCB
        raw = bytearray(REPORT_LEN)
        struct.pack_into("<I", raw, 0, version)
        struct.pack_into("<Q", raw, OFF_POLICY, policy)
        struct.pack_into("<I", raw, OFF_VMPL, vmpl)
        struct.pack_into("<I", raw, OFF_SIGNATURE_ALGO, 1)
        struct.pack_into("<Q", raw, OFF_PLATFORM_INFO, platform_info)
        struct.pack_into("<I", raw, OFF_KEY_INFO, 0)  # signed by the VCEK
        raw[OFF_REPORT_DATA : OFF_REPORT_DATA + 64] = report_data
        raw[OFF_MEASUREMENT : OFF_MEASUREMENT + 48] = measurement
        tcb_raw = bytes([spl["bootloader"], spl["tee"], 0, 0, 0, 0, spl["snp"], spl["microcode"]])
        raw[OFF_REPORTED_TCB : OFF_REPORTED_TCB + 8] = tcb_raw
        if version >= 3:
            raw[OFF_CPUID_FAM : OFF_CPUID_FAM + 3] = bytes([0x19, 0x01, 0x01])
        raw[OFF_CHIP_ID : OFF_CHIP_ID + 64] = chip_id
        signature = (key or self.vcek_key).sign(bytes(raw[:SIGNED_LEN]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        raw[OFF_SIGNATURE : OFF_SIGNATURE + 72] = r.to_bytes(72, "little")
        raw[OFF_SIGNATURE + 72 : OFF_SIGNATURE + 144] = s.to_bytes(72, "little")
        return bytes(raw)


DEBUG_POLICY = DEFAULT_POLICY | POLICY_DEBUG
