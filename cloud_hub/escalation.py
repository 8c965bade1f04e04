"""The /v1/escalate pipeline: parse, authenticate, decrypt, validate, infer, answer.

A pure core in two steps, so the HTTP shell can fetch the device between them without holding a
thread: `inspect` (structure, hub key, model, timestamp) and `accept` (device status,
signature, decryption, tensor checks, inference, poisoning checks, signed answer). Checks run
cheapest first and each raises `ProtocolError` with a stable code. Neither step writes
anything: the caller commits the returned record (whose unique (device, nonce) key is the
replay check) before the answer leaves, so an answered request is durable and a refused one
leaves no trace. The one exception is deliberate: an authentic embedding that fails the
poisoning checks is recorded with its score and reason (and counts against its device's
reputation) before it is refused with `embedding_rejected`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloud_hub.identity import HubIdentity
from cloud_hub.poisoning import CheckResult, EmbeddingChecker
from cloud_hub.serving import HubModel
from cloud_hub.store import Device, EscalationRecord, Store
from escalade_protocol import envelope
from escalade_protocol.answer import Answer, request_digest, sign_answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import load_ed25519_public
from escalade_protocol.tensor import Tensor


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
class Accepted:
    """An authentic, well-formed request: the record to commit, the poisoning checks' result,
    and the answer to send if those checks passed."""

    record: EscalationRecord
    check: CheckResult
    rejected: bool
    answer: bytes
    embedding: npt.NDArray[np.float32]

    def raise_if_rejected(self) -> None:
        if self.rejected:
            raise ProtocolError(
                ErrorCode.EMBEDDING_REJECTED,
                f"embedding failed the hub's {self.check.reason} check",
            )


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
        self.policy = policy or EscalationPolicy()
        self.checker = EmbeddingChecker(model.reference)

    def inspect(self, body: bytes, *, now_ms: int | None = None) -> envelope.SealedEnvelope:
        """Checks that need neither keys nor the database."""
        now_ms = _now_ms() if now_ms is None else now_ms
        sealed = envelope.parse(body)
        header = sealed.header
        manifest = self.model.manifest
        if header.hub_key_id != self.identity.key_id:
            raise ProtocolError(
                ErrorCode.UNKNOWN_HUB_KEY, "envelope is sealed to another hub key; re-attest"
            )
        if (header.model_id, header.model_version) != (manifest.model_id, manifest.model_version):
            raise ProtocolError(
                ErrorCode.UNKNOWN_MODEL,
                f"hub serves {manifest.model_id} v{manifest.model_version}, "
                f"not {header.model_id} v{header.model_version}",
            )
        if abs(header.timestamp_ms - now_ms) > self.policy.timestamp_window_ms:
            raise ProtocolError(
                ErrorCode.STALE_TIMESTAMP, "envelope timestamp is outside the accepted window"
            )
        return sealed

    def accept(
        self,
        sealed: envelope.SealedEnvelope,
        device: Device | None,
        body: bytes,
        *,
        now_ms: int | None = None,
    ) -> Accepted:
        """Authenticate, decrypt, validate and answer an inspected envelope."""
        now_ms = _now_ms() if now_ms is None else now_ms
        header = sealed.header
        if device is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device is not enrolled")
        if device.status == "quarantined":
            raise ProtocolError(
                ErrorCode.DEVICE_QUARANTINED,
                f"device is quarantined ({device.status_reason}); an operator must release it",
            )
        if device.status != "active":
            raise ProtocolError(ErrorCode.DEVICE_REVOKED, f"device is {device.status}")
        sealed.verify_signature(load_ed25519_public(device.public_key))

        embedding = self._validated_embedding(sealed.open_payload(self.identity.encryption_key))
        probabilities = self.model.predict(embedding)
        label = int(np.argmax(probabilities))
        # Poisoning checks, after the model: the class-conditional tier needs its prediction.
        check = self.checker.check(embedding, label)
        digest = request_digest(body)
        manifest = self.model.manifest
        answer = Answer(
            request_digest=digest,
            hub_key_id=self.identity.key_id,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            label=label,
            probabilities=Tensor.from_numpy(probabilities, "float32"),
            timestamp_ms=now_ms,
        )
        record = EscalationRecord(
            device_id=header.device_id,
            nonce=header.nonce,
            seq=header.seq,
            sent_at_ms=header.timestamp_ms,
            model_id=header.model_id,
            model_version=header.model_version,
            label=label,
            request_digest=digest,
            check_score=check.score if math.isfinite(check.score) else 1e9,
            check_reason=check.reason,
        )
        rejected = not check.passed and check.score > self.policy.reject_score
        signed = b"" if rejected else sign_answer(answer, self.identity.signing_key)
        return Accepted(
            record=record, check=check, rejected=rejected, answer=signed, embedding=embedding
        )

    def process(self, body: bytes, store: Store, *, now_ms: int | None = None) -> bytes:
        """The whole pipeline, synchronously, committing to `store`: for tools and tests."""
        sealed = self.inspect(body, now_ms=now_ms)
        accepted = self.accept(
            sealed, store.get_device(sealed.header.device_id), body, now_ms=now_ms
        )
        store.record_escalation(accepted.record)
        accepted.raise_if_rejected()
        return accepted.answer

    def _validated_embedding(self, tensor: Tensor) -> npt.NDArray[np.float32]:
        manifest = self.model.manifest
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
        if not np.isfinite(values).all():
            raise ProtocolError(ErrorCode.NON_FINITE, "embedding holds NaN or infinite values")
        return values


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
