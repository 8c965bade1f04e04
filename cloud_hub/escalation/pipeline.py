"""The /v1/escalate pipeline, pure over typed values: inspect, open, conclude, answer.

Each step checks cheapest first and raises `ProtocolError` with a stable code; none writes
anything. `EscalationService` runs them around the parts that are not pure: the device lookup
between `inspect` and `open`, the (batched) hub model between `open` and `conclude`, the
consequences (`consequences.judge`) and the durable record before `answer` signs.

    inspect(body)               structure, header ranges, hub key, model (the hub's own
                                version or one it has an adapter for), timestamp; the raw
                                body is hashed here, once
    open(inspected, device)     device status, signature, decryption, tensor checks (the
                                embedding, through its version's adapter into the model's
                                space, and the local probabilities if the device sent them)
    conclude(..., probs)        poisoning checks (the route's reference statistics) and the
                                record to commit
    unsigned_answer, sign       the answer, bound to the request's digest, then signed
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloud_hub.adapters import ModelRoute, ModelRoutes
from cloud_hub.escalation.consequences import refusal
from cloud_hub.identity import HubIdentity
from cloud_hub.models.network import GENERALIST, Routed
from cloud_hub.poisoning import CheckResult, EmbeddingChecker
from cloud_hub.serving import HubModel
from cloud_hub.store import Device, EscalationRecord, Store
from escalade_protocol import envelope
from escalade_protocol.answer import (
    Answer,
    AnswerCost,
    FusionKind,
    RouteReason,
    request_digest,
    sign_answer,
)
from escalade_protocol.artifacts import ModelManifest
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PublicKey, load_ed25519_public
from escalade_protocol.tensor import Tensor

F32 = npt.NDArray[np.float32]

# The escalations table stores seq in a signed 64-bit column (BIGINT on every engine we run):
# a larger value must be refused here, as malformed, before it can reach — and fail — a group
# commit shared with other devices' records.
MAX_SEQ = (1 << 63) - 1
# Local probabilities may be float16 on the wire: ten values rounded to 2^-11 each.
PROBS_SUM_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    # How far an envelope's timestamp may be from the hub's clock, either way.
    timestamp_window_ms: int = 60_000
    # Check scores are ratios to each tier's band (set for a 1% false-positive rate): over 1
    # the embedding is suspicious and counts against its device's reputation; over this, it is
    # also refused. Scaled, noisy or random vectors score far higher; the band between leaves
    # slow poisoning to reputation instead of refusing the hard, honest inputs that get
    # escalated, which sit in the tails (digits test split: 0.8% of all inputs and 2.6% of the
    # escalated ones beyond 1.0, none beyond 1.25).
    reject_score: float = 1.25


@dataclass(frozen=True, slots=True)
class Inspected:
    """An envelope whose structure, header and freshness passed; not yet authenticated."""

    sealed: envelope.SealedEnvelope
    # SHA-256 of the raw body: the answer is bound to it.
    digest: bytes

    @property
    def header(self) -> envelope.EnvelopeHeader:
        return self.sealed.header


@dataclass(frozen=True, slots=True)
class Opened:
    """An authenticated, decrypted request's validated tensors."""

    embedding: F32
    # The device's own probabilities (envelope payload), for fusion; None if not sent.
    local_probs: F32 | None


@dataclass(frozen=True, slots=True)
class Concluded:
    """An authentic, well-formed, inferred request: what the checks said and what to record."""

    inspected: Inspected
    label: int
    probabilities: F32
    check: CheckResult
    record: EscalationRecord


class EscalationPipeline:
    def __init__(
        self,
        *,
        identity: HubIdentity,
        model: HubModel,
        policy: EscalationPolicy | None = None,
    ) -> None:
        self.identity = identity
        self.model = model
        self.manifest: ModelManifest = model.manifest
        self.policy = policy or EscalationPolicy()
        self.checker = EmbeddingChecker(model.reference)
        # Envelopes of other encoders' versions go through an adapter into the model's space.
        self.routes = ModelRoutes(model.bundle_dir, self.manifest, self.checker)
        # What an answer by the one hub model says of itself (no network, or no local
        # probabilities to route on); the service fills in the measured latency and price.
        self.single_model = Routed(
            models=(GENERALIST,),
            reason=RouteReason.SINGLE_MODEL,
            fusion=FusionKind.NONE,
            model_us=0,
            price=0.0,
        )

    def inspect(self, body: bytes, *, now_ms: int | None = None) -> Inspected:
        """Checks that need neither keys nor the database."""
        now_ms = _now_ms() if now_ms is None else now_ms
        sealed = envelope.parse(body)
        header = sealed.header
        if header.seq > MAX_SEQ:
            raise ProtocolError(ErrorCode.MALFORMED, f"seq must be below 2^63, got {header.seq}")
        if header.hub_key_id != self.identity.key_id:
            raise ProtocolError(
                ErrorCode.UNKNOWN_HUB_KEY, "envelope is sealed to another hub key; re-attest"
            )
        self.routes.select(header.model_id, header.model_version)
        if abs(header.timestamp_ms - now_ms) > self.policy.timestamp_window_ms:
            raise ProtocolError(
                ErrorCode.STALE_TIMESTAMP, "envelope timestamp is outside the accepted window"
            )
        return Inspected(sealed, request_digest(body))

    def open(
        self,
        inspected: Inspected,
        device: Device | None,
        verify_key: Ed25519PublicKey | None = None,
    ) -> F32:
        """Authenticate and decrypt an inspected envelope; return its validated embedding.
        `verify_key`: the device's key if the caller has it loaded already."""
        return self.open_request(inspected, device, verify_key).embedding

    def open_request(
        self,
        inspected: Inspected,
        device: Device | None,
        verify_key: Ed25519PublicKey | None = None,
    ) -> Opened:
        """`open`, with the local probabilities the device sent (validated) beside it."""
        if device is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device is not enrolled")
        refusal = device_refusal(device)
        if refusal is not None:
            raise refusal
        sealed = inspected.sealed
        sealed.verify_signature(verify_key or load_ed25519_public(device.public_key))
        hub_key = self.identity.private_for(sealed.header.suite)
        if hub_key is None:
            # Not among the suites this hub accepts (its operator's minimum).
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SUITE, f"HPKE suite {sealed.header.suite.name} is not offered"
            )
        payload = sealed.open_payload(hub_key)
        route = self.routes.select(sealed.header.model_id, sealed.header.model_version)
        embedding = route.adapt(self._validated_embedding(payload.embedding, route))
        local = payload.local_probs
        return Opened(embedding, None if local is None else self._validated_probs(local))

    def conclude(self, inspected: Inspected, embedding: F32, probabilities: F32) -> Concluded:
        """Run the poisoning checks (after the model: the class tier needs its prediction)."""
        label = int(np.argmax(probabilities))
        header = inspected.header
        check = self.routes.select(header.model_id, header.model_version).checker.check(
            embedding, label
        )
        record = EscalationRecord(
            device_id=header.device_id,
            nonce=header.nonce,
            seq=header.seq,
            sent_at_ms=header.timestamp_ms,
            model_id=header.model_id,
            model_version=header.model_version,
            label=label,
            request_digest=inspected.digest,
            check_score=check.score if math.isfinite(check.score) else 1e9,
            check_reason=check.reason,
        )
        return Concluded(inspected, label, probabilities, check, record)

    def unsigned_answer(
        self,
        concluded: Concluded,
        *,
        now_ms: int | None = None,
        routed: Routed | None = None,
        request_bytes: int = 0,
    ) -> Answer:
        """The answer to a concluded request, bound to its digest; `sign` it to send it.
        `routed`: what the model network ran (None: the one hub model, unfused)."""
        manifest = self.manifest
        routed = routed or self.single_model
        return Answer(
            request_digest=concluded.inspected.digest,
            hub_key_id=self.identity.key_id,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            label=concluded.label,
            probabilities=Tensor.from_numpy(concluded.probabilities, "float32"),
            timestamp_ms=_now_ms() if now_ms is None else now_ms,
            models=routed.models,
            route_reason=routed.reason,
            fusion=routed.fusion,
            cost=AnswerCost(
                model_us=routed.model_us,
                price_micros=min(round(routed.price * 1e6), 2**32 - 1),
                request_bytes=min(request_bytes, 2**32 - 1),
            ),
        )

    def sign(self, answer: Answer) -> bytes:
        return sign_answer(answer, self.identity.signing_key)

    def process(self, body: bytes, store: Store, *, now_ms: int | None = None) -> bytes:
        """The whole pipeline, synchronously and unbatched, committing to `store`: for tools
        and tests (the service adds batching, reputation and the device cache)."""
        inspected = self.inspect(body, now_ms=now_ms)
        embedding = self.open(inspected, store.get_device(inspected.header.device_id))
        concluded = self.conclude(inspected, embedding, self.model.predict(embedding))
        store.record_escalation(concluded.record)
        refused = refusal(concluded.check, self.policy.reject_score)
        if refused is not None:
            raise refused.error()
        return self.sign(self.unsigned_answer(concluded, now_ms=now_ms, request_bytes=len(body)))

    def _validated_embedding(self, tensor: Tensor, manifest: ModelRoute) -> F32:
        if tensor.dtype != manifest.wire_dtype:
            raise ProtocolError(
                ErrorCode.BAD_TENSOR_DTYPE,
                f"embedding dtype is {tensor.dtype}, the model takes {manifest.wire_dtype}",
            )
        if tensor.shape != (manifest.embedding_dim,):
            raise ProtocolError(
                ErrorCode.BAD_TENSOR_SHAPE,
                f"embedding shape is {tensor.shape}, the model takes ({manifest.embedding_dim},)",
            )
        values = tensor.to_numpy().astype(np.float32)
        _require_finite(values, "embedding")
        return values

    def _validated_probs(self, tensor: Tensor) -> F32:
        """The device's local probabilities: one per class, finite, in [0, 1], summing to 1."""
        classes = self.manifest.num_classes
        if tensor.dtype not in ("float32", "float16"):
            raise ProtocolError(
                ErrorCode.BAD_TENSOR_DTYPE, f"local probabilities dtype is {tensor.dtype}"
            )
        if tensor.shape != (classes,):
            raise ProtocolError(
                ErrorCode.BAD_TENSOR_SHAPE,
                f"local probabilities shape is {tensor.shape}, the model has ({classes},)",
            )
        values = tensor.to_numpy().astype(np.float32)
        _require_finite(values, "local probabilities")
        if values.min() < 0 or abs(float(values.sum()) - 1.0) > PROBS_SUM_TOLERANCE:
            raise ProtocolError(ErrorCode.MALFORMED, "local probabilities are not a distribution")
        return values


def _require_finite(values: F32, what: str) -> None:
    # A finite sum means every value is finite (NaN and infinities propagate); only a sum
    # that overflowed needs the element-wise check. ~4x cheaper on the common path.
    if not math.isfinite(float(values.sum())) and not np.isfinite(values).all():
        raise ProtocolError(ErrorCode.NON_FINITE, f"{what} holds NaN or infinite values")


def device_refusal(device: Device) -> ProtocolError | None:
    """The error for a device that may not escalate, or None for an active one."""
    if device.status == "active":
        return None
    if device.status == "quarantined":
        return ProtocolError(
            ErrorCode.DEVICE_QUARANTINED,
            f"device is quarantined ({device.status_reason}); an operator must release it",
        )
    if device.status == "pending":
        return ProtocolError(
            ErrorCode.DEVICE_PENDING, "device is enrolled but waits for an administrator's approval"
        )
    return ProtocolError(ErrorCode.DEVICE_REVOKED, f"device is {device.status}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
