"""Certificates: the pinned Intel root, strict PEM chains, chain/CRL checks, SGX extensions.

Chain checks are done by hand with `cryptography.x509` primitives rather than a generic path
builder: Intel's PKI is a fixed two-level tree under one pinned root, and doing it directly
lets every problem become its own named failure instead of one opaque validation error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.dcap import der
from attestation.dcap.errors import DerError

ROOT_CA_RESOURCE = "intel_sgx_root_ca.der"
# From Intel's published root and the sample README; a swapped package file must not pass.
ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"
OID_PPID = f"{_SGX}.1"
OID_TCB = f"{_SGX}.2"
OID_PCESVN = f"{_SGX}.2.17"
OID_CPUSVN = f"{_SGX}.2.18"
OID_PCEID = f"{_SGX}.3"
OID_FMSPC = f"{_SGX}.4"
OID_SGX_TYPE = f"{_SGX}.5"
TCB_COMPONENT_COUNT = 16
FMSPC_LEN = 6
PCEID_LEN = 2

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----(?:\r?\n)?"
)


class ChainError(ValueError):
    """A certificate chain is structurally unusable (parse error, wrong shape)."""


@cache
def load_intel_root_ca() -> x509.Certificate:
    """The pinned Intel SGX Root CA, shipped with this package and checked by fingerprint."""
    der_bytes = resources.files("attestation.dcap").joinpath(ROOT_CA_RESOURCE).read_bytes()
    digest = hashlib.sha256(der_bytes).hexdigest()
    if digest != ROOT_CA_SHA256:
        raise RuntimeError(
            f"packaged {ROOT_CA_RESOURCE} has SHA-256 {digest}, expected {ROOT_CA_SHA256}"
        )
    return x509.load_der_x509_certificate(der_bytes)


def parse_pem_chain(data: bytes) -> tuple[x509.Certificate, ...]:
    """Parse concatenated PEM certificates, rejecting anything but canonical encoding.

    The quote's certification data is not covered by any signature, so we refuse text that a
    lenient decoder would read identically despite differing bytes (stray characters, non-
    canonical base64 padding bits); only trailing NULs (C string terminators) are tolerated.
    """
    body = data.rstrip(b"\x00")
    certs: list[x509.Certificate] = []
    pos = 0
    while pos < len(body):
        match = _PEM_BLOCK.match(body, pos)
        if match is None:
            raise ChainError(f"unexpected bytes at offset {pos} of the PEM certificate chain")
        b64 = match.group(1).replace(b"\r\n", b"").replace(b"\n", b"")
        try:
            der_bytes = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ChainError(f"bad base64 in PEM certificate {len(certs)}: {exc}") from None
        if base64.b64encode(der_bytes) != b64:
            raise ChainError(f"non-canonical base64 in PEM certificate {len(certs)}")
        certs.append(load_certificate(der_bytes, f"certificate {len(certs)}"))
        pos = match.end()
    if not certs:
        raise ChainError("no certificates in the PEM chain")
    return tuple(certs)


def load_certificate(der_bytes: bytes, what: str) -> x509.Certificate:
    """Load and fully decode a certificate; ChainError if any part is malformed.

    pyca parses fields lazily, so a corrupt name or extension would otherwise surface as an
    exception deep inside a later check; touching every field here keeps that in one place.
    """
    try:
        cert = x509.load_der_x509_certificate(der_bytes)
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.extensions)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_hash_algorithm)
        cert.public_key()
    except Exception as exc:  # pyca raises ValueError, TypeError, InvalidVersion, ... here
        raise ChainError(f"cannot parse {what}: {type(exc).__name__}: {exc}") from None
    return cert


def load_crl(der_bytes: bytes) -> x509.CertificateRevocationList:
    """Load and fully decode a CRL (entries included); ValueError if malformed."""
    try:
        crl = x509.load_der_x509_crl(der_bytes)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.extensions)
        for entry in crl:
            _ = (entry.serial_number, entry.extensions)
    except Exception as exc:  # as for certificates: many exception types, one meaning
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return crl


def der_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def signature_problem(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `cert` is not directly issued by `issuer` (name, signature, CA flag), or None."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return f"signature on '{_cn(cert)}' does not verify with '{_cn(issuer)}'"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"'{_cn(cert)}' is not issued by '{_cn(issuer)}': {exc}"
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return f"issuer '{_cn(issuer)}' has no usable BasicConstraints"
    if not constraints.ca:
        return f"issuer '{_cn(issuer)}' is not a CA"
    return None


def chain_problems(
    certs: tuple[x509.Certificate, ...], root: x509.Certificate, root_der: bytes
) -> list[str]:
    """Problems linking `certs` (leaf first) to the pinned `root`; empty when sound.

    A trailing self-issued certificate must be byte-identical to the pinned root; the topmost
    other certificate must be signed by the pinned root itself.
    """
    problems: list[str] = []
    path = list(certs)
    if len(path) > 1 and path[-1].subject == path[-1].issuer:
        if der_bytes(path[-1]) != root_der:
            problems.append(f"chain root '{_cn(path[-1])}' is not the pinned Intel SGX Root CA")
        path.pop()
    if der_bytes(path[0]) == root_der:
        problems.append("chain has no certificate below the root")
        return problems
    for depth, (cert, issuer) in enumerate(zip(path, [*path[1:], root], strict=True)):
        problem = signature_problem(cert, issuer)
        if problem is not None:
            problems.append(problem)
        # `depth` CA certificates sit between this issuer and the leaf.
        limit = _path_length(issuer)
        if limit is not None and depth > limit:
            problems.append(f"'{_cn(issuer)}' allows {limit} CAs below it, chain has {depth}")
    return problems


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except (x509.ExtensionNotFound, ValueError):
        return None


def validity_problems(certs: tuple[x509.Certificate, ...], now: datetime) -> list[str]:
    return [
        f"'{_cn(c)}' is valid {c.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
        f"{c.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, not at {now:%Y-%m-%dT%H:%M:%SZ}"
        for c in certs
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc
    ]


def crl_signature_problem(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate
) -> str | None:
    if crl.issuer != issuer.subject:
        return f"CRL issuer '{crl.issuer.rfc4514_string()}' is not '{_cn(issuer)}'"
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(key):
        return f"CRL signature does not verify with '{_cn(issuer)}'"
    return None


def crl_validity_problem(
    crl: x509.CertificateRevocationList, now: datetime, name: str
) -> str | None:
    next_update = crl.next_update_utc
    if next_update is None:
        return f"{name} has no nextUpdate"
    if not crl.last_update_utc <= now <= next_update:
        return (
            f"{name} is valid {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ} to "
            f"{next_update:%Y-%m-%dT%H:%M:%SZ}, not at {now:%Y-%m-%dT%H:%M:%SZ}"
        )
    return None


def is_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def verify_p256(public_key: ec.EllipticCurvePublicKey, raw_sig: bytes, message: bytes) -> bool:
    """ECDSA-P256-SHA256 over `message` with a raw r||s signature (Intel's wire format)."""
    if len(raw_sig) != 64:
        return False
    r = int.from_bytes(raw_sig[:32], "big")
    s = int.from_bytes(raw_sig[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def p256_key_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey:
    """Raw x||y (64 bytes) to a key; ValueError if the point is not on the curve."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)


def cert_p256_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ChainError(f"'{_cn(cert)}' does not hold a P-256 key")
    return key


@dataclass(frozen=True, slots=True)
class PckExtensions:
    """The SGX extension of a PCK certificate (Intel "PCK Certificate and CRL Profile")."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # CPUSVN components 1..16
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Decode OID 1.2.840.113741.1.13.1: SEQUENCE OF SEQUENCE { OID, value }."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise DerError("PCK certificate has no SGX extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise DerError("SGX extension was not left raw by the X.509 parser")
    top = _oid_map(der.read_single(ext.value, der.TAG_SEQUENCE).value)
    tcb_entries = _oid_map(_need(top, OID_TCB, der.TAG_SEQUENCE).value)
    components = tuple(
        der.decode_unsigned(_need(tcb_entries, f"{OID_TCB}.{i}", der.TAG_INTEGER))
        for i in range(1, TCB_COMPONENT_COUNT + 1)
    )
    if any(c > 0xFF for c in components):
        raise DerError("TCB component SVN above 255")
    sgx_type_tlv = top.get(OID_SGX_TYPE)
    fmspc = _need(top, OID_FMSPC, der.TAG_OCTET_STRING).value
    pce_id = _need(top, OID_PCEID, der.TAG_OCTET_STRING).value
    if len(fmspc) != FMSPC_LEN or len(pce_id) != PCEID_LEN:
        raise DerError("FMSPC must be 6 bytes and PCE-ID 2 bytes")
    return PckExtensions(
        ppid=_need(top, OID_PPID, der.TAG_OCTET_STRING).value,
        tcb_components=components,
        pce_svn=der.decode_unsigned(_need(tcb_entries, OID_PCESVN, der.TAG_INTEGER)),
        cpu_svn=_need(tcb_entries, OID_CPUSVN, der.TAG_OCTET_STRING).value,
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=der.decode_unsigned(sgx_type_tlv) if sgx_type_tlv is not None else 0,
    )


def _oid_map(seq_contents: bytes) -> dict[str, der.Tlv]:
    """SEQUENCE OF SEQUENCE { OID, value } -> {dotted OID: value TLV}; duplicates rejected."""
    out: dict[str, der.Tlv] = {}
    for entry in der.read_all(seq_contents):
        der.expect(entry, der.TAG_SEQUENCE)
        parts = der.read_all(entry.value)
        if len(parts) != 2:
            raise DerError("SGX extension entry is not an (OID, value) pair")
        der.expect(parts[0], der.TAG_OID)
        oid = der.decode_oid(parts[0].value)
        if oid in out:
            raise DerError(f"duplicate SGX extension entry {oid}")
        out[oid] = parts[1]
    return out


def _need(entries: dict[str, der.Tlv], oid: str, tag: int) -> der.Tlv:
    tlv = entries.get(oid)
    if tlv is None:
        raise DerError(f"SGX extension lacks {oid}")
    der.expect(tlv, tag)
    return tlv


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return value.decode() if isinstance(value, bytes) else value
