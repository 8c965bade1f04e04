"""Escalade's wire types and their one canonical encoding, shared by agent and hub."""

from escalade_protocol.answer import Answer, request_digest, sign_answer, verify_answer
from escalade_protocol.envelope import EnvelopeHeader, SealedEnvelope, parse, seal
from escalade_protocol.errors import HTTP_STATUS, ErrorCode, ProtocolError
from escalade_protocol.keys import hub_key_id, public_bytes
from escalade_protocol.tensor import Tensor

__all__ = [
    "HTTP_STATUS",
    "Answer",
    "EnvelopeHeader",
    "ErrorCode",
    "ProtocolError",
    "SealedEnvelope",
    "Tensor",
    "hub_key_id",
    "parse",
    "public_bytes",
    "request_digest",
    "seal",
    "sign_answer",
    "verify_answer",
]
