"""JSON messages of the HTTP APIs: frozen, strict pydantic models, never loose dicts.

Binary values travel as lowercase hex. The escalation itself is binary (see `envelope`).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
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


class ReplicaListRequest(Message):
    nonce: HexBytes = Field(
        description="the agent's fresh nonce, 32 bytes; the list is bound to it"
    )


class AdaptedModelInfo(Message):
    """A model version the hub serves through an adapter into its own model's space."""

    model_id: str
    model_version: int
    embedding_dim: int
    wire_dtype: Literal["float32", "float16"]
    kind: Literal["linear", "mlp"]


class HubModelInfo(Message):
    model_id: str
    model_version: int
    embedding_dim: int
    num_classes: int
    wire_dtype: Literal["float32", "float16"]
    # The share of answered escalations this hub audits by re-encoding (the device then
    # reveals that input to the attested enclave): part of the attested bundle, so a device
    # knows the policy it runs under.
    audit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Other encoders' versions this hub accepts, mapped by adapters (cloud_hub/adapters/): a
    # device running one of them passes the attestation check's model comparison.
    adapted: tuple[AdaptedModelInfo, ...] = ()

    def serves(self, model_id: str, model_version: int) -> bool:
        """Whether an envelope of (model_id, model_version) is answered here."""
        if (model_id, model_version) == (self.model_id, self.model_version):
            return True
        return any((a.model_id, a.model_version) == (model_id, model_version) for a in self.adapted)


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


class AnswerPath(StrEnum):
    """Where an answer came from: the local head by choice, the hub, or the local head because
    the escalation the router wanted could not happen."""

    LOCAL = "local"
    ESCALATED = "escalated"
    DEGRADED = "degraded"


class AnswerReason(StrEnum):
    """Why an answer took its path: the router's reason, or why escalation was impossible."""

    # local by choice
    CONFIDENT = "confident"
    FORCED_LOCAL = "forced_local"
    # escalated
    UNCERTAIN = "uncertain"
    EXPLORE = "explore"
    FORCED_HUB = "forced_hub"
    # degraded: the router wanted the hub and could not have it
    BUDGET_MINUTE = "budget_minute"
    BUDGET_DAY = "budget_day"
    LATENCY_BUDGET = "latency_budget"
    HUB_UNREACHABLE = "hub_unreachable"
    HUB_TIMEOUT = "hub_timeout"
    ATTESTATION_REFUSED = "attestation_refused"
    MODEL_MISMATCH = "model_mismatch"
    DEVICE_REFUSED = "device_refused"
    HUB_REJECTED = "hub_rejected"
    HUB_RATE_LIMITED = "hub_rate_limited"
    BAD_ANSWER = "bad_answer"
    # the agent's own check of the embedding against the bundle's bands (would be refused)
    EMBEDDING_OUT_OF_BAND = "embedding_out_of_band"
    # the input lies outside the bundle's input domain
    OUT_OF_DOMAIN = "out_of_domain"


class InferRequest(Message):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    input: list[float] = Field(min_length=1, max_length=1 << 20)
    # auto: the router decides; local / hub force a path (diagnostics, benchmarks).
    route: Route = "auto"


class AttestationSummary(Message):
    status: Literal["affirming", "warning", "contraindicated"]
    tee: str
    insecure: bool
    detail: str


class HubRouting(Message):
    """What the hub's model network did for one escalated answer."""

    models: list[str]
    route_reason: str
    fusion: str
    model_us: int
    price_micros: int
    request_bytes: int


class InferResponse(Message):
    label: int
    source: Source
    path: AnswerPath
    reason: AnswerReason
    # The hub's error code when it refused the escalation (reason hub_rejected / device_refused).
    hub_error: ErrorCode | None = None
    # The probability of the answer given (the hub's on hub answers, the local head's otherwise).
    confidence: float
    # The routing signal (max probability unless the bundle says otherwise) and the threshold
    # it was compared with; the router adapts the threshold as inputs drift.
    signal: float
    threshold: float | None = None
    local_label: int
    hub_label: int | None = None
    probabilities: list[float]
    # The input lies outside the bundle's input domain: the answer is not to be trusted.
    out_of_domain: bool = False
    model_id: str
    model_version: int
    attestation: AttestationSummary | None = None
    escalation_bytes: int | None = None
    latency_ms: float
    # The outcome record's id in the agent's outbox (delivered to the hub later).
    record_id: uuid.UUID | None = None
    # Hub answers (answer version 3): the hub models that answered, why the meta-router
    # chose them, how their probabilities were fused with the local ones, and the cost.
    hub: HubRouting | None = None


class HealthReason(StrEnum):
    """Why the agent is degraded (it still answers, locally)."""

    NOT_READY = "not_ready"
    HUB_UNREACHABLE = "hub_unreachable"
    HUB_TIMEOUT = "hub_timeout"
    ATTESTATION_REFUSED = "attestation_refused"
    MODEL_MISMATCH = "model_mismatch"
    DEVICE_REFUSED = "device_refused"
    HUB_REJECTED = "hub_rejected"
    HUB_RATE_LIMITED = "hub_rate_limited"
    NOT_ATTESTED = "not_attested"


class BundleHealth(Message):
    """The agent's model bundle and its rollout (edge_agent/bundle_update)."""

    # The bundle serving now, the one installed (models_dir) and the one the hub assigns.
    digest: str
    installed_digest: str
    assigned_digest: str | None
    # current | pending | rolled_back | refused (the assignment's fate) and the updater's phase.
    state: Literal["current", "pending", "rolled_back", "refused"]
    phase: Literal["idle", "loading", "probation"]
    # Digests this agent refused or rolled back (not tried again until it restarts).
    failed: list[str] = Field(default_factory=list)
    code: str = ""
    detail: str = ""


class AgentHealth(Message):
    status: Literal["ok", "degraded"]
    reasons: list[HealthReason] = Field(default_factory=list)
    # The hub's error code behind device_refused / hub_rejected, when there is one.
    hub_error: ErrorCode | None = None
    breaker: Literal["closed", "open", "half_open"] = "closed"
    ready: bool = True
    device_id: uuid.UUID
    profile: str
    providers: list[str]
    model_id: str
    model_version: int
    hub_url: str
    hub_attestation: AttestationSummary | None
    outbox_depth: int = 0
    outbox_dropped: int = 0
    # Audits by re-encoding: the share of escalations the attested hub audits (each audited
    # input is revealed to its enclave), and this agent's audits asked, answered, failed.
    audit_rate: float = 0.0
    audits: int = 0
    audits_revealed: int = 0
    audits_failed: int = 0
    # Signed bundle rollouts: null when the agent does not follow the hub's assignments.
    bundle: BundleHealth | None = None
    detail: str
