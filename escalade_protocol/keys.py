"""Key encodings and identifiers shared by agent and hub."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from escalade_protocol.errors import ErrorCode, ProtocolError

HUB_KEY_ID_SIZE = 16
_HUB_KEY_ID_DOMAIN = b"escalade/v1/hub-key-id\x00"


def public_bytes(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def hub_key_id(
    encryption_key: bytes, signing_key: bytes, additional_keys: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    """Names one hub identity (its X25519 and Ed25519 public keys, and any further sealing keys
    it offers as (suite id, public key) pairs) in envelope headers."""
    extra = b"".join(
        bytes([suite]) + len(key).to_bytes(2, "big") + key for suite, key in additional_keys
    )
    return hashlib.sha256(_HUB_KEY_ID_DOMAIN + encryption_key + signing_key + extra).digest()[
        :HUB_KEY_ID_SIZE
    ]


def load_ed25519_public(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, "not an Ed25519 public key") from None


def load_x25519_public(raw: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, "not an X25519 public key") from None


__all__ = [
    "HUB_KEY_ID_SIZE",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "X25519PrivateKey",
    "X25519PublicKey",
    "hub_key_id",
    "load_ed25519_public",
    "load_x25519_public",
    "public_bytes",
]
