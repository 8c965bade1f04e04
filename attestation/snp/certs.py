"""AMD's SEV-SNP PKI: pinned ARKs per product, RSA-PSS links, VCEK/VLEK extensions, CRLs.

    ARK (self-signed, RSA-4096) -> ASK  -> VCEK (per chip and TCB, ECDSA P-384)
                                -> ASVK -> VLEK (per cloud provider, ECDSA P-384)

Every link is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt; we verify exactly
those parameters rather than what a certificate claims. The ARK, ASK and ASVK of Milan, Genoa
and Turin ship with this package (AMD's public certificates, as served by KDS ``cert_chain``
and ``vlek/.../cert_chain``); only the ARKs are trust anchors, pinned by SHA-256, and the
intermediates are checked against them like any other.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from attestation.snp.errors import CertificateError
from attestation.snp.report import Product, TcbVersion

# SHA-256 of each ARK's DER: a swapped package file must not become a trust anchor.
ARK_SHA256 = {
    Product.MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    Product.GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    Product.TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

_AMD = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = f"{_AMD}.2"
OID_BL_SPL = f"{_AMD}.3.1"
OID_TEE_SPL = f"{_AMD}.3.2"
OID_SNP_SPL = f"{_AMD}.3.3"
OID_UCODE_SPL = f"{_AMD}.3.8"
OID_FMC_SPL = f"{_AMD}.3.9"
OID_HWID = f"{_AMD}.4"
OID_CSP_ID = f"{_AMD}.5"
HWID_LEN = 64


@dataclass(frozen=True, slots=True)
class ProductCerts:
    """One product's pinned ARK and AMD's intermediates under it."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """A certificate from DER or PEM, fully decoded; CertificateError if malformed."""
    try:
        with warnings.catch_warnings():
            # AMD issues VCEKs/VLEKs with serial number 0 (the shared VLEK sample has one);
            # pyca warns that RFC 5280 forbids it. The serial plays no part in our checks.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
            _ = (cert.subject, cert.issuer, cert.extensions, cert.serial_number)
            _ = (cert.not_valid_before_utc, cert.not_valid_after_utc)
            cert.public_key()
    except Exception as exc:  # pyca raises ValueError, TypeError, ... for malformed DER
        raise CertificateError(f"cannot parse {what}: {type(exc).__name__}: {exc}") from None
    return cert


def load_pem_chain(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in data.split(marker)[1:]]
    if not blocks:
        raise CertificateError(f"{what} holds no PEM certificate")
    return tuple(load_certificate(block, what) for block in blocks)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


@cache
def pinned_products() -> dict[Product, ProductCerts]:
    """AMD's ARK/ASK/ASVK per product from package data, ARKs checked by fingerprint."""
    out: dict[Product, ProductCerts] = {}
    for product, fingerprint in ARK_SHA256.items():
        name = f"amd_{product.value.lower()}.pem"
        pem = resources.files("attestation.snp").joinpath(name).read_bytes()
        by_cn = {common_name(c.subject): c for c in load_pem_chain(pem, name)}
        ark = by_cn[f"ARK-{product.value}"]
        digest = hashlib.sha256(der(ark)).hexdigest()
        if digest != fingerprint:
            raise RuntimeError(f"packaged {name} ARK has SHA-256 {digest}, expected {fingerprint}")
        out[product] = ProductCerts(
            product, ark, by_cn[f"SEV-{product.value}"], by_cn[f"SEV-VLEK-{product.value}"]
        )
    return out


def link_problem(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `issuer` did not sign `child` with AMD's RSA-PSS parameters, or None."""
    child_cn, issuer_cn = common_name(child.subject), common_name(issuer.subject)
    if child.issuer != issuer.subject:
        return f"{child_cn} is issued by {common_name(child.issuer)}, not {issuer_cn}"
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return f"{issuer_cn} does not hold an RSA key"
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, PSS, hashes.SHA384())
    except InvalidSignature:
        return f"{child_cn} is not signed by {issuer_cn} (RSA-PSS SHA-384, salt 48)"
    return None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, list(crl))
    except Exception as exc:  # malformed DER surfaces as several exception types
        raise CertificateError(f"cannot parse CRL: {type(exc).__name__}: {exc}") from None
    return crl


def crl_problem(crl: x509.CertificateRevocationList, ark: x509.Certificate) -> str | None:
    if crl.issuer != ark.subject:
        return f"CRL issued by {common_name(crl.issuer)}, not {common_name(ark.subject)}"
    key = ark.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return "ARK does not hold an RSA key"
    try:
        key.verify(crl.signature, crl.tbs_certlist_bytes, PSS, hashes.SHA384())
    except InvalidSignature:
        return "CRL is not signed by the ARK (RSA-PSS SHA-384)"
    return None


@dataclass(frozen=True, slots=True)
class KeyExtensions:
    """What AMD writes into a VCEK/VLEK: product, the TCB it was issued for, chip or CSP."""

    product_name: str
    tcb: TcbVersion
    hwid: bytes | None  # VCEK: the chip id the report must carry
    csp_id: str | None  # VLEK: the cloud provider


def _der_value(raw: bytes, tag: int, what: str) -> bytes:
    if len(raw) < 2 or raw[0] != tag or (raw[1] & 0x80 and raw[1] != 0x81):
        raise CertificateError(f"{what}: unexpected DER encoding")
    if raw[1] == 0x81:
        length, start = raw[2], 3
    else:
        length, start = raw[1], 2
    if start + length != len(raw):
        raise CertificateError(f"{what}: DER length disagrees with the extension")
    return raw[start:]


def _ext_bytes(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _ext_int(cert: x509.Certificate, oid: str, what: str) -> int:
    raw = _ext_bytes(cert, oid)
    if raw is None:
        raise CertificateError(f"certificate lacks the {what} extension")
    value = int.from_bytes(_der_value(raw, 0x02, what), "big", signed=True)
    if not 0 <= value <= 0xFF:
        raise CertificateError(f"{what} {value} is not an SVN")
    return value


def key_extensions(cert: x509.Certificate, product: Product | None) -> KeyExtensions:
    """Read AMD's extensions from a VCEK or VLEK; CertificateError if any is malformed."""
    name_raw = _ext_bytes(cert, OID_PRODUCT_NAME)
    product_name = (
        _der_value(name_raw, 0x16, "productName").decode("ascii", "replace") if name_raw else ""
    )
    fmc = (
        _ext_int(cert, OID_FMC_SPL, "fmcSPL")
        if product is Product.TURIN and _ext_bytes(cert, OID_FMC_SPL) is not None
        else None
    )
    tcb = TcbVersion(
        bootloader=_ext_int(cert, OID_BL_SPL, "blSPL"),
        tee=_ext_int(cert, OID_TEE_SPL, "teeSPL"),
        snp=_ext_int(cert, OID_SNP_SPL, "snpSPL"),
        microcode=_ext_int(cert, OID_UCODE_SPL, "ucodeSPL"),
        fmc=fmc,
    )
    hwid_raw = _ext_bytes(cert, OID_HWID)
    hwid = None
    if hwid_raw is not None:
        # KDS writes the 64 raw bytes; some tools wrap them in an OCTET STRING.
        hwid = hwid_raw if len(hwid_raw) == HWID_LEN else _der_value(hwid_raw, 0x04, "hwID")
    csp_raw = _ext_bytes(cert, OID_CSP_ID)
    csp_id = _der_value(csp_raw, 0x16, "csp_id").decode("ascii", "replace") if csp_raw else None
    return KeyExtensions(product_name=product_name, tcb=tcb, hwid=hwid, csp_id=csp_id)
