"""The hub's sealing keys, one per HPKE suite it offers, and how a device picks among them.

A hub always holds an X25519 key (the attestation bundle's `encryption_key`) and may offer more
(`OfferedKey`): today the hybrid post-quantum ML-KEM-768 + X25519 KEM. Every offered key is
bound into the evidence's REPORT_DATA and into the hub key id, so a man in the middle who strips
the post-quantum key from a bundle breaks the binding: a downgrade is refused at appraisal, and
the signed envelope header names the suite the device then used.

The hybrid public key travels as ML-KEM-768's encapsulation key (1,184 bytes) followed by the
X25519 public key (32 bytes), the order of the HPKE hybrid KEM drafts; pyca/cryptography builds
the HPKE key from the two parts and offers no encoding of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import Field

from escalade_protocol.envelope import HpkeSuiteId, HubPublicKey
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import load_x25519_public, public_bytes
from escalade_protocol.messages import HexBytes, Message

MLKEM768_PUBLIC_SIZE: Final = 1184
X25519_SIZE: Final = 32
HYBRID_PUBLIC_SIZE: Final = MLKEM768_PUBLIC_SIZE + X25519_SIZE
# ML-KEM's 64-byte seed (FIPS 203 "d || z") then the X25519 scalar: what sealing stores.
HYBRID_PRIVATE_SIZE: Final = 64 + X25519_SIZE

# Weakest first: a device picks the strongest suite both sides support.
SUITE_STRENGTH: Final = (HpkeSuiteId.X25519, HpkeSuiteId.MLKEM768_X25519)
SUITE_NAMES: Final = {HpkeSuiteId.X25519: "x25519", HpkeSuiteId.MLKEM768_X25519: "mlkem768-x25519"}
SUITES_BY_NAME: Final = {name: suite for suite, name in SUITE_NAMES.items()}


class OfferedKey(Message):
    """A sealing key the hub offers besides its X25519 `encryption_key`."""

    suite: HpkeSuiteId
    public_key: HexBytes = Field(
        description="mlkem768-x25519: ML-KEM-768 encapsulation key (1,184 bytes) || X25519 (32)"
    )


def offered_pairs(offered: Iterable[OfferedKey]) -> tuple[tuple[int, bytes], ...]:
    """(suite id, public key) pairs, as `report_data` and `hub_key_id` bind them."""
    return tuple((key.suite, key.public_key) for key in offered)


def suite_named(name: str) -> HpkeSuiteId:
    try:
        return SUITES_BY_NAME[name]
    except KeyError:
        known = ", ".join(SUITES_BY_NAME)
        raise ValueError(f"unknown HPKE suite {name!r} (known: {known})") from None


def load_hub_public(suite: HpkeSuiteId, raw: bytes) -> HubPublicKey:
    """Parse an offered public key; a wrong length or an invalid point is `malformed`."""
    if suite is HpkeSuiteId.X25519:
        return load_x25519_public(raw)
    if len(raw) != HYBRID_PUBLIC_SIZE:
        raise ProtocolError(
            ErrorCode.MALFORMED, f"an {SUITE_NAMES[suite]} key is {HYBRID_PUBLIC_SIZE} bytes"
        )
    try:
        kem = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_SIZE])
        classical = X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_SIZE:])
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, "not an ML-KEM-768 + X25519 key") from None
    return hpke.MLKEM768X25519PublicKey(kem, classical)


def strongest_common(offered: Iterable[HpkeSuiteId], minimum: HpkeSuiteId) -> HpkeSuiteId | None:
    """The strongest offered suite at least as strong as `minimum`; None when there is none."""
    offered = set(offered)
    floor = SUITE_STRENGTH.index(minimum)
    usable = [s for s in SUITE_STRENGTH[floor:] if s in offered]
    return usable[-1] if usable else None


@dataclass(frozen=True, slots=True)
class HybridKey:
    """The hub's ML-KEM-768 + X25519 private key, kept as its two parts so it can be sealed."""

    kem: mlkem.MLKEM768PrivateKey
    classical: X25519PrivateKey

    @classmethod
    def generate(cls) -> HybridKey:
        return cls(mlkem.MLKEM768PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> HybridKey:
        if len(raw) != HYBRID_PRIVATE_SIZE:
            raise ValueError(f"a hybrid private key is {HYBRID_PRIVATE_SIZE} bytes")
        return cls(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]),
            X25519PrivateKey.from_private_bytes(raw[64:]),
        )

    def private_bytes(self) -> bytes:
        return self.kem.private_bytes_raw() + self.classical.private_bytes_raw()

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(self.kem, self.classical)

    def public_bytes(self) -> bytes:
        return self.kem.public_key().public_bytes_raw() + public_bytes(self.classical.public_key())
