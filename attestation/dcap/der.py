"""A minimal DER reader: just enough ASN.1 for the PCK certificate's SGX extension.

Only definite-length, single-byte-tag encodings are accepted (DER forbids the rest), and every
length is bounds-checked, so hostile input raises `DerError` rather than misreading memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from attestation.dcap.errors import DerError

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
TAG_BOOLEAN = 0x01

_HIGH_TAG_NUMBER = 0x1F
_LONG_LENGTH = 0x80
# Four length octets already allow 4 GiB; nothing in a certificate comes close.
_MAX_LENGTH_OCTETS = 4


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes


def read_tlv(data: bytes, offset: int) -> tuple[Tlv, int]:
    """Read one TLV at `offset`; return it and the offset just past it."""
    if offset + 2 > len(data):
        raise DerError("truncated DER element")
    tag = data[offset]
    if tag & _HIGH_TAG_NUMBER == _HIGH_TAG_NUMBER:
        raise DerError("multi-byte DER tags are not supported")
    first = data[offset + 1]
    pos = offset + 2
    if first < _LONG_LENGTH:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > _MAX_LENGTH_OCTETS:
            raise DerError("indefinite or oversized DER length")
        if pos + count > len(data):
            raise DerError("truncated DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < _LONG_LENGTH or data[pos] == 0:
            raise DerError("non-minimal DER length")
        pos += count
    end = pos + length
    if end > len(data):
        raise DerError("DER element runs past its container")
    return Tlv(tag, data[pos:end]), end


def read_all(data: bytes) -> list[Tlv]:
    """Split `data` into consecutive TLVs (the contents of a SEQUENCE)."""
    items: list[Tlv] = []
    offset = 0
    while offset < len(data):
        tlv, offset = read_tlv(data, offset)
        items.append(tlv)
    return items


def read_single(data: bytes, tag: int) -> Tlv:
    """Read exactly one TLV of `tag` spanning all of `data`."""
    tlv, end = read_tlv(data, 0)
    if end != len(data):
        raise DerError("trailing bytes after DER element")
    expect(tlv, tag)
    return tlv


def expect(tlv: Tlv, tag: int) -> None:
    if tlv.tag != tag:
        raise DerError(f"expected DER tag 0x{tag:02x}, got 0x{tlv.tag:02x}")


def decode_oid(value: bytes) -> str:
    """Dotted-decimal form of an OBJECT IDENTIFIER's contents."""
    if not value or value[-1] & 0x80:
        raise DerError("malformed OID")
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def decode_unsigned(tlv: Tlv) -> int:
    """A non-negative INTEGER or ENUMERATED."""
    if tlv.tag not in (TAG_INTEGER, TAG_ENUMERATED):
        raise DerError(f"expected INTEGER, got tag 0x{tlv.tag:02x}")
    if not tlv.value:
        raise DerError("empty INTEGER")
    value = int.from_bytes(tlv.value, "big", signed=True)
    if value < 0:
        raise DerError("negative INTEGER where an SVN was expected")
    return value
