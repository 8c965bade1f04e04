"""The hub's signed answer to one escalation.

The answer names the request it answers by the SHA-256 of the sealed envelope, so an answer
cannot be replayed to another request, and it is signed by the attested hub Ed25519 key.

Layout: "ESA1" | u32 len | answer body | 64-byte Ed25519 signature over
"escalade/v1/answer\\0" || body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidSignature

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import HUB_KEY_ID_SIZE, Ed25519PrivateKey, Ed25519PublicKey
from escalade_protocol.tensor import Tensor

# 2: the answer says whether the hub audits this escalation (asks for its input's reveal).
# 3: the model network: which models answered, why the meta-router chose them, how their
#    probabilities were fused with the device's, and what the answer cost (docs/model-network.md).
ANSWER_VERSION: Final = 3
# Version 2 answers still decode (an older hub), as one model, unfused, of unknown cost.
DECODED_VERSIONS: Final = (2, 3)
MAX_MODELS: Final = 16


class RouteReason(IntEnum):
    """Why the hub ran the models it ran."""

    SINGLE_MODEL = 0  # the hub serves one model (or an answer from a version 2 hub)
    PREDICTED_BEST = 1  # the arm with the highest predicted accuracy
    CHEAPEST_NEAR_BEST = 2  # a cheaper arm within the router's tolerance of the best
    OVER_BUDGET = 3  # the best arms exceed the latency / cost budget: the best within it
    EXPLORE = 4  # exploration: every model ran, the router learns from their consensus
    NO_LOCAL_PROBS = 5  # the device sent no local probabilities: the generalist alone


class FusionKind(IntEnum):
    NONE = 0  # the hub model's probabilities as they are
    LOG_LINEAR = 1  # calibrated log-linear pooling of local and hub probabilities


@dataclass(frozen=True, slots=True)
class AnswerCost:
    """What one answer cost the hub."""

    model_us: int = 0  # hub model time, summed over the models run
    price_micros: int = 0  # declared price of the models run, in millionths of the unit
    request_bytes: int = 0  # the sealed envelope's size


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
    # Version 3: the model network.
    models: tuple[str, ...] = ()
    route_reason: RouteReason = RouteReason.SINGLE_MODEL
    fusion: FusionKind = FusionKind.NONE
    cost: AnswerCost = AnswerCost()
    version: int = ANSWER_VERSION

    def encode(self) -> bytes:
        if self.version != ANSWER_VERSION:
            raise ValueError(f"only version {ANSWER_VERSION} answers are encoded")
        if len(self.models) > MAX_MODELS:
            raise ValueError(f"at most {MAX_MODELS} models per answer")
        writer = (
            Writer()
            .u8(self.version)
            .fixed(self.request_digest, 32)
            .fixed(self.hub_key_id, HUB_KEY_ID_SIZE)
            .text(self.model_id)
            .u32(self.model_version)
            .u16(self.label)
        )
        self.probabilities.encode_into(writer).u64(self.timestamp_ms).u8(1 if self.audit else 0).u8(
            len(self.models)
        )
        for name in self.models:
            writer.text(name)
        return (
            writer.u8(self.route_reason)
            .u8(self.fusion)
            .u32(self.cost.model_us)
            .u32(self.cost.price_micros)
            .u32(self.cost.request_bytes)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> Answer:
        reader = Reader(data)
        version = reader.u8()
        if version not in DECODED_VERSIONS:
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
        if version >= 3:
            answer = _network_fields(answer, reader)
        reader.finish()
        return answer


def _network_fields(answer: Answer, reader: Reader) -> Answer:
    count = reader.u8()
    if count > MAX_MODELS:
        raise ProtocolError(ErrorCode.MALFORMED, f"answer names {count} models")
    models = tuple(reader.text() for _ in range(count))
    try:
        reason, fusion = RouteReason(reader.u8()), FusionKind(reader.u8())
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, "unknown route reason or fusion") from None
    cost = AnswerCost(model_us=reader.u32(), price_micros=reader.u32(), request_bytes=reader.u32())
    return Answer(
        request_digest=answer.request_digest,
        hub_key_id=answer.hub_key_id,
        model_id=answer.model_id,
        model_version=answer.model_version,
        label=answer.label,
        probabilities=answer.probabilities,
        timestamp_ms=answer.timestamp_ms,
        audit=answer.audit,
        models=models,
        route_reason=reason,
        fusion=fusion,
        cost=cost,
    )


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
