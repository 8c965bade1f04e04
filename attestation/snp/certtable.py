"""The SNP certificate table the host hands a guest with an extended report (GHCB spec,
"SNP Extended Guest Request"), which Linux exposes as configfs-tsm's ``auxblob``.

    entry*: GUID (16 bytes, EFI/Microsoft byte order) | offset (u32 LE) | length (u32 LE)
    an all-zero entry ends the table; offsets count from the start of the table buffer

The certificates are DER. Nothing here is trusted: the verifier checks every one of them.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.snp.certs import load_certificate
from attestation.snp.errors import CertificateError

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
_ENTRY = struct.Struct("<16sII")


@dataclass(frozen=True, slots=True)
class HostCertificates:
    vcek: bytes | None  # the VCEK or VLEK, DER
    chain_pem: str | None  # ASK (or ASVK) then ARK, PEM


def parse_cert_table(blob: bytes) -> dict[uuid.UUID, bytes]:
    """GUID -> DER; CertificateError if an entry points outside the buffer."""
    out: dict[uuid.UUID, bytes] = {}
    pos = 0
    while pos + _ENTRY.size <= len(blob):
        raw_guid, offset, length = _ENTRY.unpack_from(blob, pos)
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            return out
        if offset + length > len(blob):
            raise CertificateError("certificate table entry points past the buffer")
        out[uuid.UUID(bytes_le=raw_guid)] = blob[offset : offset + length]
        pos += _ENTRY.size
    if not blob:
        return out
    raise CertificateError("certificate table has no terminating entry")


def build_cert_table(certs: Mapping[uuid.UUID, bytes]) -> bytes:
    """The host side of the format (for fakes and tests)."""
    header_len = _ENTRY.size * (len(certs) + 1)
    entries, body = b"", b""
    for guid, der in certs.items():
        entries += _ENTRY.pack(guid.bytes_le, header_len + len(body), len(der))
        body += der
    return entries + _ENTRY.pack(bytes(16), 0, 0) + body


def host_certificates(blob: bytes) -> HostCertificates:
    """The key and chain from an auxblob; what is absent stays None (the verifier says so)."""
    table = parse_cert_table(blob)
    key = table.get(GUID_VCEK) or table.get(GUID_VLEK)
    chain: list[x509.Certificate] = [
        load_certificate(table[guid], str(guid)) for guid in (GUID_ASK, GUID_ARK) if guid in table
    ]
    pem = "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in chain)
    return HostCertificates(vcek=key, chain_pem=pem or None)
