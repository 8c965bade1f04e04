"""Input commitments and audit reveals: holding a device to the input it encoded.

Every envelope header carries a commitment that binds the embedding to the input it came from::

    commitment = SHA-256( "escalade/v1/input-commitment\\0"
                          || salt (32) || u32 len || input || u32 len || embedding )

`input` and `embedding` are canonical `Tensor` encodings (the input as float32 features, the
embedding exactly as sealed on the wire). The salt is random per input and stays on the device
with the input, so the header reveals nothing about either (not even that two inputs were
equal). The device signs the header, so the commitment is its own statement.

When the hub audits an escalation it asks for a reveal: salt and input, sealed (HPKE, the
envelope's suite) to the hub's attested key with the audited request's digest bound into the
key schedule, so a reveal cannot be read outside the enclave nor moved to another request.
The hub recomputes the commitment from the revealed salt and input and the embedding it
received, then re-encodes the input with the model's own encoder and compares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.envelope import (
    COMMITMENT_SIZE,
    HPKE_SUITES,
    HpkeSuiteId,
    HubPrivateKey,
    HubPublicKey,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.tensor import Tensor

__all__ = ["COMMITMENT_SIZE", "NO_COMMITMENT", "Revealed", "commit", "open_reveal", "seal_reveal"]

SALT_SIZE: Final = 32
# What a header carries when a sender commits to nothing (tools that send bare embeddings): it
# matches no reveal, so such an escalation fails any audit.
NO_COMMITMENT: Final = bytes(COMMITMENT_SIZE)
COMMITMENT_DOMAIN: Final = b"escalade/v1/input-commitment\x00"
REVEAL_INFO_DOMAIN: Final = b"escalade/v1/audit-reveal\x00"


def commit(salt: bytes, input_tensor: bytes, embedding_tensor: bytes) -> bytes:
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    return hashlib.sha256(
        Writer()
        .raw(COMMITMENT_DOMAIN)
        .fixed(salt, SALT_SIZE)
        .long_bytes(input_tensor)
        .long_bytes(embedding_tensor)
        .getvalue()
    ).digest()


@dataclass(frozen=True, slots=True)
class Revealed:
    """What a device reveals for one audited escalation (only ever inside the enclave)."""

    salt: bytes
    input: Tensor

    def commitment(self, embedding_tensor: bytes) -> bytes:
        return commit(self.salt, self.input.encode(), embedding_tensor)


# A reveal is sealed with the suite of the escalation it answers (the hub reads it from that
# envelope's signed header): a raw input deserves at least the embedding's protection.
def seal_reveal(
    revealed: Revealed,
    hub_key: HubPublicKey,
    *,
    request_digest: bytes,
    suite: HpkeSuiteId = HpkeSuiteId.X25519,
) -> bytes:
    plaintext = Writer().fixed(revealed.salt, SALT_SIZE).raw(revealed.input.encode()).getvalue()
    return HPKE_SUITES[suite].encrypt(plaintext, hub_key, info=REVEAL_INFO_DOMAIN + request_digest)


def open_reveal(
    sealed: bytes,
    hub_key: HubPrivateKey,
    *,
    request_digest: bytes,
    suite: HpkeSuiteId = HpkeSuiteId.X25519,
) -> Revealed:
    try:
        plaintext = HPKE_SUITES[suite].decrypt(
            sealed, hub_key, info=REVEAL_INFO_DOMAIN + request_digest
        )
    except (InvalidTag, ValueError):
        raise ProtocolError(ErrorCode.BAD_CIPHERTEXT, "audit reveal cannot be decrypted") from None
    r = Reader(plaintext)
    salt = r.fixed(SALT_SIZE)
    return Revealed(salt=salt, input=Tensor.decode(r.rest()))
