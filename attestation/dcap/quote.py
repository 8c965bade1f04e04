"""Intel DCAP quote layouts (SGX v3, SGX/TDX v4, v5) and a strict parser.

Names and offsets follow Intel's "SGX ECDSA Quote Library API" (quote v3) and "TDX DCAP Quoting
Library API" (quote v4/v5) appendices. All integers are little-endian. The parser checks every
length field against the bytes actually present, so a parsed `Quote` never needs re-validation;
it does not verify anything cryptographic (that is `verify.py`'s job).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from attestation.dcap.errors import QuoteFormatError

# --- Quote header (48 bytes, all versions) ---
HEADER_LEN = 48
HDR_VERSION = 0  # uint16
HDR_ATT_KEY_TYPE = 2  # uint16
HDR_TEE_TYPE = 4  # uint32 (v3: reserved, must be 0 = SGX)
HDR_QE_SVN = 8  # uint16
HDR_PCE_SVN = 10  # uint16
HDR_QE_VENDOR_ID = 12  # 16 bytes
HDR_USER_DATA = 28  # 20 bytes
QE_VENDOR_ID_LEN = 16
USER_DATA_LEN = 20

ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# --- SGX REPORT body (sgx_report_body_t, 384 bytes) ---
ENCLAVE_REPORT_LEN = 384
RPT_CPU_SVN = 0  # 16
RPT_MISC_SELECT = 16  # uint32
RPT_ISV_EXT_PROD_ID = 32  # 16 (after 12 reserved bytes)
RPT_ATTRIBUTES = 48  # 16: flags (uint64) + xfrm (uint64)
RPT_MR_ENCLAVE = 64  # 32
RPT_MR_SIGNER = 128  # 32 (after 32 reserved bytes)
RPT_CONFIG_ID = 192  # 64 (after 32 reserved bytes)
RPT_ISV_PROD_ID = 256  # uint16
RPT_ISV_SVN = 258  # uint16
RPT_CONFIG_SVN = 260  # uint16
RPT_ISV_FAMILY_ID = 304  # 16 (after 42 reserved bytes)
RPT_REPORT_DATA = 320  # 64
SGX_FLAG_DEBUG = 0x02  # ATTRIBUTES.FLAGS bit 1

# --- TDX TD report body (TD 1.0: 584 bytes; TD 1.5 appends 64) ---
TD_REPORT10_LEN = 584
TD_REPORT15_LEN = 648
TD_TEE_TCB_SVN = 0  # 16
TD_MR_SEAM = 16  # 48
TD_MR_SIGNER_SEAM = 64  # 48
TD_SEAM_ATTRIBUTES = 112  # 8
TD_TD_ATTRIBUTES = 120  # 8
TD_XFAM = 128  # 8
TD_MR_TD = 136  # 48
TD_MR_CONFIG_ID = 184  # 48
TD_MR_OWNER = 232  # 48
TD_MR_OWNER_CONFIG = 280  # 48
TD_RTMR0 = 328  # 4 x 48
TD_REPORT_DATA = 520  # 64
TD_TEE_TCB_SVN2 = 584  # 16 (TD 1.5 only)
TD_MR_SERVICETD = 600  # 48 (TD 1.5 only)
MR_LEN = 48
TD_ATTR_DEBUG = 0x01  # TDATTRIBUTES bit 0 (TUD.DEBUG)

# --- v5 body descriptor: type (uint16) + size (uint32) between header and body ---
V5_BODY_SGX = 1
V5_BODY_TD10 = 2
V5_BODY_TD15 = 3

# --- Signature data ---
ECDSA_SIG_LEN = 64  # r || s, 32 bytes each, big-endian
ATT_KEY_LEN = 64  # raw P-256 point x || y
CERT_DATA_PCK_CHAIN = 5  # concatenated PEM: PCK leaf, PCK CA, root
CERT_DATA_QE_REPORT = 6  # QE report certification data wrapping a type-5 chain

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

TeeType = Literal["sgx", "tdx"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnclaveReport:
    """An SGX REPORT body (the application enclave's, or the Quoting Enclave's)."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & SGX_FLAG_DEBUG)

    @classmethod
    def parse(cls, raw: bytes) -> EnclaveReport:
        if len(raw) != ENCLAVE_REPORT_LEN:
            raise QuoteFormatError(f"SGX report body must be {ENCLAVE_REPORT_LEN} bytes")
        return cls(
            cpu_svn=raw[RPT_CPU_SVN : RPT_CPU_SVN + 16],
            misc_select=_U32.unpack_from(raw, RPT_MISC_SELECT)[0],
            isv_ext_prod_id=raw[RPT_ISV_EXT_PROD_ID : RPT_ISV_EXT_PROD_ID + 16],
            attributes=raw[RPT_ATTRIBUTES : RPT_ATTRIBUTES + 16],
            mr_enclave=raw[RPT_MR_ENCLAVE : RPT_MR_ENCLAVE + 32],
            mr_signer=raw[RPT_MR_SIGNER : RPT_MR_SIGNER + 32],
            config_id=raw[RPT_CONFIG_ID : RPT_CONFIG_ID + 64],
            isv_prod_id=_U16.unpack_from(raw, RPT_ISV_PROD_ID)[0],
            isv_svn=_U16.unpack_from(raw, RPT_ISV_SVN)[0],
            config_svn=_U16.unpack_from(raw, RPT_CONFIG_SVN)[0],
            isv_family_id=raw[RPT_ISV_FAMILY_ID : RPT_ISV_FAMILY_ID + 16],
            report_data=raw[RPT_REPORT_DATA : RPT_REPORT_DATA + 64],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TdReport:
    """A TDX TD report body; `tee_tcb_svn2`/`mr_servicetd` are set only for TD 1.5 (v5)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_servicetd: bytes | None = None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTR_DEBUG)

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @classmethod
    def parse(cls, raw: bytes) -> TdReport:
        if len(raw) not in (TD_REPORT10_LEN, TD_REPORT15_LEN):
            raise QuoteFormatError(
                f"TD report body must be {TD_REPORT10_LEN} or {TD_REPORT15_LEN} bytes"
            )

        def mr(offset: int) -> bytes:
            return raw[offset : offset + MR_LEN]

        rtmr = [mr(TD_RTMR0 + i * MR_LEN) for i in range(4)]
        td15 = len(raw) == TD_REPORT15_LEN
        return cls(
            tee_tcb_svn=raw[TD_TEE_TCB_SVN : TD_TEE_TCB_SVN + 16],
            mr_seam=mr(TD_MR_SEAM),
            mr_signer_seam=mr(TD_MR_SIGNER_SEAM),
            seam_attributes=raw[TD_SEAM_ATTRIBUTES : TD_SEAM_ATTRIBUTES + 8],
            td_attributes=raw[TD_TD_ATTRIBUTES : TD_TD_ATTRIBUTES + 8],
            xfam=raw[TD_XFAM : TD_XFAM + 8],
            mr_td=mr(TD_MR_TD),
            mr_config_id=mr(TD_MR_CONFIG_ID),
            mr_owner=mr(TD_MR_OWNER),
            mr_owner_config=mr(TD_MR_OWNER_CONFIG),
            rtmr0=rtmr[0],
            rtmr1=rtmr[1],
            rtmr2=rtmr[2],
            rtmr3=rtmr[3],
            report_data=raw[TD_REPORT_DATA : TD_REPORT_DATA + 64],
            tee_tcb_svn2=raw[TD_TEE_TCB_SVN2 : TD_TEE_TCB_SVN2 + 16] if td15 else None,
            mr_servicetd=mr(TD_MR_SERVICETD) if td15 else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    version: int
    attestation_key_type: int
    tee_type: TeeType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body: EnclaveReport | TdReport
    # Header + (v5 body descriptor +) body: exactly what the attestation key signed.
    signed_region: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    # The outermost certification data type: 5 in v3 quotes, 6 in v4/v5.
    certification_data_type: int
    pck_chain_pem: bytes
    # Bytes after the signature data: covered by no signature and part of no measured value,
    # so ignored (as dcap-qvl and go-tdx-guest do: quote buffers are often allocated
    # generously); only their count is kept, for the verdict.
    trailing_bytes: int = 0


class _Reader:
    """Bounds-checked cursor; every read names the field for the error message."""

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = offset
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise QuoteFormatError(
                f"quote truncated reading {what}: need {n} bytes at offset {self.pos}, "
                f"{max(self.end - self.pos, 0)} available"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        value: int = _U16.unpack(self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP quote (SGX v3, SGX/TDX v4, v5); raise `QuoteFormatError` if malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise QuoteFormatError(f"quote must be bytes, not {type(data).__name__}")
    data = bytes(data)
    r = _Reader(data)
    header = _parse_header(r)
    body_raw = r.take(_body_length(r, header), "report body")
    body = EnclaveReport.parse(body_raw) if header.tee_type == "sgx" else TdReport.parse(body_raw)
    signed_region = data[: r.pos]
    sig = _parse_signature_data(data, r, header.version)
    return Quote(
        trailing_bytes=sig.trailing_bytes,
        version=header.version,
        attestation_key_type=header.att_key_type,
        tee_type=header.tee_type,
        qe_svn=header.qe_svn,
        pce_svn=header.pce_svn,
        qe_vendor_id=header.qe_vendor_id,
        user_data=header.user_data,
        body=body,
        signed_region=signed_region,
        signature=sig.signature,
        attestation_key=sig.attestation_key,
        qe_report=EnclaveReport.parse(sig.qe_report_raw),
        qe_report_raw=sig.qe_report_raw,
        qe_report_signature=sig.qe_report_signature,
        qe_auth_data=sig.qe_auth_data,
        certification_data_type=sig.certification_data_type,
        pck_chain_pem=sig.pck_chain_pem,
    )


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    att_key_type: int
    tee_type: TeeType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class _SignatureData:
    signature: bytes
    attestation_key: bytes
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data_type: int
    pck_chain_pem: bytes
    trailing_bytes: int


def _parse_header(r: _Reader) -> _Header:
    version = r.u16("header.version")
    att_key_type = r.u16("header.att_key_type")
    tee_type_raw = r.u32("header.tee_type")
    qe_svn = r.u16("header.qe_svn")
    pce_svn = r.u16("header.pce_svn")
    qe_vendor_id = r.take(QE_VENDOR_ID_LEN, "header.qe_vendor_id")
    user_data = r.take(USER_DATA_LEN, "header.user_data")
    if version not in (3, 4, 5):
        raise QuoteFormatError(f"unsupported quote version {version} (supported: 3, 4, 5)")
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise QuoteFormatError(
            f"unsupported attestation key type {att_key_type} (only 2 = ECDSA-256-with-P-256)"
        )
    tee_type: TeeType
    if tee_type_raw == TEE_TYPE_SGX:
        tee_type = "sgx"
    elif tee_type_raw == TEE_TYPE_TDX and version >= 4:
        tee_type = "tdx"
    else:
        raise QuoteFormatError(f"unsupported TEE type 0x{tee_type_raw:08x} in a v{version} quote")
    return _Header(version, att_key_type, tee_type, qe_svn, pce_svn, qe_vendor_id, user_data)


def _body_length(r: _Reader, header: _Header) -> int:
    """v3/v4 imply the body size from the TEE type; v5 states it in a body descriptor."""
    if header.version != 5:
        return ENCLAVE_REPORT_LEN if header.tee_type == "sgx" else TD_REPORT10_LEN
    body_type = r.u16("body.type")
    body_size = r.u32("body.size")
    expected = {
        V5_BODY_SGX: ("sgx", ENCLAVE_REPORT_LEN),
        V5_BODY_TD10: ("tdx", TD_REPORT10_LEN),
        V5_BODY_TD15: ("tdx", TD_REPORT15_LEN),
    }.get(body_type)
    if expected != (header.tee_type, body_size):
        raise QuoteFormatError(
            f"v5 body type {body_type} with size {body_size} does not fit TEE {header.tee_type}"
        )
    return body_size


def _parse_signature_data(data: bytes, r: _Reader, version: int) -> _SignatureData:
    sig_data_len = r.u32("signature_data_len")
    sig_end = r.pos + sig_data_len
    if sig_end > len(data):
        raise QuoteFormatError(
            f"signature_data_len {sig_data_len} exceeds the {len(data) - r.pos} bytes left"
        )
    s = _Reader(data, r.pos, sig_end)
    signature = s.take(ECDSA_SIG_LEN, "quote signature")
    attestation_key = s.take(ATT_KEY_LEN, "attestation key")
    if version == 3:
        cert_type = CERT_DATA_PCK_CHAIN
        qe_raw, qe_sig, qe_auth, chain = _read_qe_section(s)
    else:
        cert_type = s.u16("certification_data.type")
        outer_size = s.u32("certification_data.size")
        if cert_type != CERT_DATA_QE_REPORT:
            raise QuoteFormatError(
                f"v{version} quote certification data type {cert_type}, "
                f"expected {CERT_DATA_QE_REPORT} (QE report certification data)"
            )
        inner = _Reader(data, s.pos, s.pos + outer_size)
        if inner.end > s.end:
            raise QuoteFormatError("certification data size exceeds the signature data")
        qe_raw, qe_sig, qe_auth, chain = _read_qe_section(inner)
        if inner.pos != inner.end:
            raise QuoteFormatError("trailing bytes inside QE report certification data")
        s.pos = inner.end
    if s.pos != s.end:
        raise QuoteFormatError(
            f"signature_data_len {sig_data_len} disagrees with its contents "
            f"({s.pos - (sig_end - sig_data_len)} bytes)"
        )
    return _SignatureData(
        signature,
        attestation_key,
        qe_raw,
        qe_sig,
        qe_auth,
        cert_type,
        chain,
        trailing_bytes=len(data) - sig_end,
    )


def _read_qe_section(r: _Reader) -> tuple[bytes, bytes, bytes, bytes]:
    """QE report, its signature, QE auth data and the type-5 PCK chain.

    v3 quotes carry these directly in the signature data; v4/v5 wrap the same layout in
    certification data of type 6, so one reader serves both.
    """
    qe_raw = r.take(ENCLAVE_REPORT_LEN, "QE report")
    qe_sig = r.take(ECDSA_SIG_LEN, "QE report signature")
    auth_len = r.u16("QE auth data size")
    qe_auth = r.take(auth_len, "QE auth data")
    cert_type = r.u16("PCK certification data type")
    cert_size = r.u32("PCK certification data size")
    if cert_type != CERT_DATA_PCK_CHAIN:
        raise QuoteFormatError(
            f"unsupported certification data type {cert_type} "
            f"(only {CERT_DATA_PCK_CHAIN} = PEM PCK certificate chain)"
        )
    chain = r.take(cert_size, "PCK certificate chain")
    return qe_raw, qe_sig, qe_auth, chain
