"""Binding the hub's keys and a verifier's nonce into the 64-byte REPORT_DATA of a quote.

    report_data = SHA-512( "escalade/v1/report-data\\0"
                           || u16(len(x25519_pub)) || x25519_pub
                           || u16(len(ed25519_pub)) || ed25519_pub
                           || u16(len(nonce)) || nonce
                           || for each additional key: u8(suite) || u16(len(key)) || key )

Length prefixes make the concatenation unambiguous; the domain string keeps this hash from
being mistaken for any other SHA-512 the hub computes. A fresh verifier nonce in the hash proves
the evidence was produced after the verifier asked, by the enclave that holds these keys.

Additional keys (the post-quantum sealing keys a hub offers, `escalade_protocol.hub_keys`) are
appended after the nonce, so a hub offering none binds exactly what it bound before; a bundle
stripped of any offered key no longer matches its evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

REPORT_DATA_DOMAIN: Final = b"escalade/v1/report-data\x00"
REPORT_DATA_SIZE: Final = 64
NONCE_SIZE: Final = 32


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def report_data(
    *,
    encryption_key: bytes,
    signing_key: bytes,
    nonce: bytes,
    additional_keys: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """`additional_keys`: (HPKE suite id, public key) pairs, in the bundle's order."""
    extra = b"".join(bytes([suite]) + _field(key) for suite, key in additional_keys)
    digest = hashlib.sha512(
        REPORT_DATA_DOMAIN + _field(encryption_key) + _field(signing_key) + _field(nonce) + extra
    ).digest()
    assert len(digest) == REPORT_DATA_SIZE
    return digest
