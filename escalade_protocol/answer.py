"""The hub's signed answer to one escalation.

The answer names the request it answers by the SHA-256 of the sealed envelope, so an answer
cannot be replayed to another request, and it is signed by the attested hub Ed25519 key.

Layout: "ESA1" | u32 len | answer body | 64-byte Ed25519 signature over
"escalade/v1/answer\\0" || body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import HUB_KEY_ID_SIZE, Ed25519PrivateKey, Ed25519PublicKey
from escalade_protocol.tensor import Tensor

# 2: the answer says whether the hub audits this escalation (asks for its input's reveal).
ANSWER_VERSION: Final = 2
MAGIC: Final = b"ESA1"
SIGNATURE_DOMAIN: Final = b"escalade/v1/answer\x00"


def request_digest(envelope: bytes) -> bytes:
    return hashlib.sha256(envelope).digest()


@dataclass(frozen=True, slots=True)
class Answer:
    request_digest: bytes
    hub_key_id: bytes
    model_id: str
    model_version: int
    label: int
    probabilities: Tensor
    timestamp_ms: int
    # The hub selected this escalation for an audit: reveal its input (`provenance`).
    audit: bool = False
    version: int = ANSWER_VERSION

    def encode(self) -> bytes:
        writer = (
            Writer()
            .u8(self.version)
            .fixed(self.request_digest, 32)
            .fixed(self.hub_key_id, HUB_KEY_ID_SIZE)
            .text(self.model_id)
            .u32(self.model_version)
            .u16(self.label)
        )
        return (
            self.probabilities.encode_into(writer)
            .u64(self.timestamp_ms)
            .u8(1 if self.audit else 0)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> Answer:
        reader = Reader(data)
        version = reader.u8()
        if version != ANSWER_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"answer version {version}")
        answer = cls(
            version=version,
            request_digest=reader.fixed(32),
            hub_key_id=reader.fixed(HUB_KEY_ID_SIZE),
            model_id=reader.text(),
            model_version=reader.u32(),
            label=reader.u16(),
            probabilities=Tensor.decode_from(reader),
            timestamp_ms=reader.u64(),
            audit=_flag(reader.u8()),
        )
        reader.finish()
        return answer


def _flag(value: int) -> bool:
    if value > 1:
        raise ProtocolError(ErrorCode.MALFORMED, "answer flag is not 0 or 1")
    return value == 1


def sign_answer(answer: Answer, hub_key: Ed25519PrivateKey) -> bytes:
    body = answer.encode()
    signature = hub_key.sign(SIGNATURE_DOMAIN + body)
    return Writer().raw(MAGIC).long_bytes(body).fixed(signature, 64).getvalue()


def verify_answer(data: bytes, hub_key: Ed25519PublicKey, *, expected_digest: bytes) -> Answer:
    """Check the hub's signature and that the answer is for our request; raise otherwise."""
    reader = Reader(data)
    if reader.fixed(len(MAGIC)) != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not an Escalade answer")
    body = reader.long_bytes()
    signature = reader.fixed(64)
    reader.finish()
    try:
        hub_key.verify(signature, SIGNATURE_DOMAIN + body)
    except InvalidSignature:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "answer signature is invalid") from None
    answer = Answer.decode(body)
    if answer.request_digest != expected_digest:
        raise ProtocolError(ErrorCode.MALFORMED, "answer is for another request")
    return answer
