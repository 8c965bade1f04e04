"""AMD SEV-SNP attestation report layout (versions 2 and 3, 1,184 bytes) and a strict parser.

Offsets follow AMD's "SEV Secure Nested Paging Firmware ABI Specification" (table
"ATTESTATION_REPORT Structure"). Integers are little-endian. The signed part is bytes 0 to
0x29F; the signature (ECDSA P-384 over SHA-384) follows as r and s, each 72 bytes,
little-endian, zero-extended. Parsing checks layout only; nothing cryptographic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from attestation.snp.errors import ReportFormatError

REPORT_LEN = 0x4A0  # 1,184
SIGNED_LEN = 0x2A0
SUPPORTED_VERSIONS = (2, 3)

OFF_VERSION = 0x00
OFF_GUEST_SVN = 0x04
OFF_POLICY = 0x08
OFF_FAMILY_ID = 0x10
OFF_IMAGE_ID = 0x20
OFF_VMPL = 0x30
OFF_SIGNATURE_ALGO = 0x34
OFF_CURRENT_TCB = 0x38
OFF_PLATFORM_INFO = 0x40
OFF_KEY_INFO = 0x48  # AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY bit 1, SIGNING_KEY bits 2-4
OFF_REPORT_DATA = 0x50
OFF_MEASUREMENT = 0x90
OFF_HOST_DATA = 0xC0
OFF_ID_KEY_DIGEST = 0xE0
OFF_AUTHOR_KEY_DIGEST = 0x110
OFF_REPORT_ID = 0x140
OFF_REPORT_ID_MA = 0x160
OFF_REPORTED_TCB = 0x180
OFF_CPUID_FAM = 0x188  # v3: CPUID family, model, stepping (one byte each)
OFF_CHIP_ID = 0x1A0
OFF_COMMITTED_TCB = 0x1E0
OFF_LAUNCH_TCB = 0x1F0
OFF_SIGNATURE = 0x2A0
SIG_COMPONENT_LEN = 72  # r, s: little-endian, zero-extended to 72 bytes
SIG_ALGO_ECDSA_P384_SHA384 = 1

# Guest policy bits (the policy the guest owner launched the VM with).
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17  # must be 1
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
# Platform info bits (what the host platform actually runs with).
PLATFORM_SMT_EN = 1 << 0
PLATFORM_TSME_EN = 1 << 1


class SigningKey(IntEnum):
    VCEK = 0
    VLEK = 1
    NONE = 7


class Product(StrEnum):
    """AMD EPYC generations with SEV-SNP; each has its own ARK."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


@dataclass(frozen=True, slots=True, kw_only=True)
class TcbVersion:
    """TCB_VERSION SVNs. Turin moved the fields and added the FMC (firmware) SVN."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def parse(cls, raw: int, product: Product | None) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if product is Product.TURIN:
            return cls(fmc=b[0], bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def at_least(self, other: TcbVersion) -> bool:
        return (
            self.bootloader >= other.bootloader
            and self.tee >= other.tee
            and self.snp >= other.snp
            and self.microcode >= other.microcode
            and (other.fmc is None or (self.fmc or 0) >= other.fmc)
        )

    def as_dict(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnpReport:
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: int  # SigningKey value, or an unknown number (refused by the verifier)
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid: tuple[int, int, int] | None  # (family, model, stepping), v3 only
    chip_id: bytes
    committed_tcb_raw: int
    launch_tcb_raw: int
    signed_region: bytes  # bytes 0..0x29F, exactly what the VCEK/VLEK signed
    signature_r: int
    signature_s: int

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    @property
    def migrate_ma(self) -> bool:
        return bool(self.policy & POLICY_MIGRATE_MA)

    @property
    def smt_allowed(self) -> bool:
        return bool(self.policy & POLICY_SMT)

    @property
    def smt_enabled(self) -> bool:
        return bool(self.platform_info & PLATFORM_SMT_EN)

    @property
    def product_from_cpuid(self) -> Product | None:
        """The processor generation a v3 report names (family 19h: Milan/Genoa, 1Ah: Turin)."""
        if self.cpuid is None:
            return None
        family, model, _ = self.cpuid
        if family == 0x19 and model <= 0x0F:
            return Product.MILAN
        if family == 0x19 and 0x10 <= model <= 0x1F:
            return Product.GENOA
        if family == 0x1A:
            return Product.TURIN
        return None

    def reported_tcb(self, product: Product | None) -> TcbVersion:
        return TcbVersion.parse(self.reported_tcb_raw, product)


def parse_report(data: bytes) -> SnpReport:
    """Parse an SNP attestation report; raise `ReportFormatError` if it is not one we support."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ReportFormatError(f"report must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) != REPORT_LEN:
        raise ReportFormatError(f"an SNP report is {REPORT_LEN} bytes, got {len(raw)}")
    version = _U32.unpack_from(raw, OFF_VERSION)[0]
    if version not in SUPPORTED_VERSIONS:
        raise ReportFormatError(f"unsupported SNP report version {version} (supported: 2, 3)")
    algo = _U32.unpack_from(raw, OFF_SIGNATURE_ALGO)[0]
    if algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise ReportFormatError(f"unsupported signature algorithm {algo} (1 = ECDSA P-384)")
    key_info = _U32.unpack_from(raw, OFF_KEY_INFO)[0]
    if any(raw[OFF_SIGNATURE + 2 * SIG_COMPONENT_LEN :]):
        # Reserved, must be zero; refusing keeps one accepted encoding per signature.
        raise ReportFormatError("non-zero bytes in the reserved part of the signature field")
    r_raw = raw[OFF_SIGNATURE : OFF_SIGNATURE + SIG_COMPONENT_LEN]
    s_raw = raw[OFF_SIGNATURE + SIG_COMPONENT_LEN : OFF_SIGNATURE + 2 * SIG_COMPONENT_LEN]

    def u64(offset: int) -> int:
        value: int = _U64.unpack_from(raw, offset)[0]
        return value

    def blob(offset: int, size: int) -> bytes:
        return raw[offset : offset + size]

    return SnpReport(
        version=version,
        guest_svn=_U32.unpack_from(raw, OFF_GUEST_SVN)[0],
        policy=u64(OFF_POLICY),
        family_id=blob(OFF_FAMILY_ID, 16),
        image_id=blob(OFF_IMAGE_ID, 16),
        vmpl=_U32.unpack_from(raw, OFF_VMPL)[0],
        signature_algo=algo,
        current_tcb_raw=u64(OFF_CURRENT_TCB),
        platform_info=u64(OFF_PLATFORM_INFO),
        author_key_en=bool(key_info & 1),
        mask_chip_key=bool(key_info & 2),
        signing_key=(key_info >> 2) & 0b111,
        report_data=blob(OFF_REPORT_DATA, 64),
        measurement=blob(OFF_MEASUREMENT, 48),
        host_data=blob(OFF_HOST_DATA, 32),
        id_key_digest=blob(OFF_ID_KEY_DIGEST, 48),
        author_key_digest=blob(OFF_AUTHOR_KEY_DIGEST, 48),
        report_id=blob(OFF_REPORT_ID, 32),
        report_id_ma=blob(OFF_REPORT_ID_MA, 32),
        reported_tcb_raw=u64(OFF_REPORTED_TCB),
        cpuid=(
            (raw[OFF_CPUID_FAM], raw[OFF_CPUID_FAM + 1], raw[OFF_CPUID_FAM + 2])
            if version >= 3
            else None
        ),
        chip_id=blob(OFF_CHIP_ID, 64),
        committed_tcb_raw=u64(OFF_COMMITTED_TCB),
        launch_tcb_raw=u64(OFF_LAUNCH_TCB),
        signed_region=raw[:SIGNED_LEN],
        signature_r=int.from_bytes(r_raw, "little"),
        signature_s=int.from_bytes(s_raw, "little"),
    )


def looks_like_snp_report(data: bytes) -> bool:
    """Cheap detection for tools that take "a quote" of any kind: length, version and algo."""
    return (
        len(data) == REPORT_LEN
        and _U32.unpack_from(data, OFF_VERSION)[0] in SUPPORTED_VERSIONS
        and _U32.unpack_from(data, OFF_SIGNATURE_ALGO)[0] == SIG_ALGO_ECDSA_P384_SHA384
    )
