"""JSON messages of the HTTP APIs: frozen, strict pydantic models, never loose dicts.

Binary values travel as lowercase hex. The escalation itself is binary (see `envelope`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from escalade_protocol.errors import ErrorCode


def _hex_to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError("not valid hex") from None


HexBytes = Annotated[
    bytes, PlainValidator(_hex_to_bytes), PlainSerializer(lambda b: b.hex(), return_type=str)
]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(Message):
    code: ErrorCode
    message: str


# A firmware profile name as the device reports it. It picks the cohort a device is compared in
# and appears in logs, so it is a short lowercase name, never free text (no spaces, newlines).
PROFILE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class EnrollRequest(Message):
    token: str = Field(min_length=16, max_length=256)
    public_key: HexBytes = Field(description="raw Ed25519 public key, 32 bytes")
    proof: HexBytes = Field(description="signature over enrollment_proof_bytes(token, public_key)")
    profile: str = Field(
        default="unknown",
        pattern=PROFILE_PATTERN,
        description="firmware profile name: lowercase letters, digits, '.', '_', '-'",
    )


class EnrollResponse(Message):
    device_id: uuid.UUID


class AttestationRequest(Message):
    nonce: HexBytes = Field(description="verifier's fresh nonce, 32 bytes")


class HubModelInfo(Message):
    model_id: str
    model_version: int
    embedding_dim: int
    num_classes: int
    wire_dtype: Literal["float32", "float16"]


class HealthBody(Message):
    status: Literal["ok", "degraded"]
    detail: str = ""


ENROLLMENT_PROOF_DOMAIN = b"escalade/v1/enrollment-proof\x00"


def enrollment_proof_bytes(token: str, public_key: bytes) -> bytes:
    """What a device signs to prove it holds the key it enrolls (bound to the one-time token)."""
    token_bytes = token.encode("utf-8")
    return (
        ENROLLMENT_PROOF_DOMAIN
        + len(token_bytes).to_bytes(2, "big")
        + token_bytes
        + len(public_key).to_bytes(2, "big")
        + public_key
    )


# -- the agent's local API (for applications on the device) ------------------------------------

Route = Literal["auto", "local", "hub"]
Source = Literal["local", "hub"]


class InferRequest(Message):
    input: list[float] = Field(min_length=1, max_length=1 << 20)
    # auto: the router decides; local / hub force a path (diagnostics, benchmarks).
    route: Route = "auto"


class AttestationSummary(Message):
    status: Literal["affirming", "warning", "contraindicated"]
    tee: str
    insecure: bool
    detail: str


class InferResponse(Message):
    label: int
    source: Source
    # why the router chose this path: confident, uncertain, forced_local, forced_hub,
    # or why escalation was impossible (hub_unreachable, attestation_refused, hub_rejected:CODE)
    reason: str
    # The routing signal (max probability unless the bundle says otherwise) and the threshold
    # it was compared with; the router adapts the threshold as inputs drift.
    confidence: float
    threshold: float | None = None
    local_label: int
    hub_label: int | None = None
    probabilities: list[float]
    model_id: str
    model_version: int
    attestation: AttestationSummary | None = None
    escalation_bytes: int | None = None
    latency_ms: float


class AgentHealth(Message):
    status: Literal["ok", "degraded"]
    device_id: uuid.UUID
    profile: str
    providers: list[str]
    model_id: str
    model_version: int
    hub_url: str
    hub_attestation: AttestationSummary | None
    detail: str
