"""The /v1/escalate pipeline: parse, authenticate, decrypt, validate, infer, record, answer.

Checks run cheapest first and every one raises `ProtocolError` with a stable code. Nothing is
written until every check has passed; the single write (the escalation record, whose unique
(device, nonce) key is the replay check) commits before the answer leaves, so an answered
request is durable and a refused one leaves no trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cloud_hub.identity import HubIdentity
from cloud_hub.serving import HubModel
from cloud_hub.store import EscalationRecord, Store
from escalade_protocol import envelope
from escalade_protocol.answer import Answer, request_digest, sign_answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import load_ed25519_public
from escalade_protocol.tensor import Tensor


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    # How far an envelope's timestamp may be from the hub's clock, either way.
    timestamp_window_ms: int = 60_000


class EscalationPipeline:
    def __init__(
        self,
        *,
        identity: HubIdentity,
        model: HubModel,
        store: Store,
        policy: EscalationPolicy | None = None,
    ) -> None:
        self.identity = identity
        self.model = model
        self.store = store
        self.policy = policy or EscalationPolicy()

    def process(self, body: bytes, *, now_ms: int | None = None) -> bytes:
        """Answer one sealed envelope with a signed answer, or raise `ProtocolError`."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
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

        device = self.store.get_device(header.device_id)
        if device is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device is not enrolled")
        if device.status != "active":
            raise ProtocolError(ErrorCode.DEVICE_REVOKED, f"device is {device.status}")
        sealed.verify_signature(load_ed25519_public(device.public_key))

        embedding = self._validated_embedding(sealed.open_payload(self.identity.encryption_key))
        probabilities = self.model.predict(embedding)
        label = int(np.argmax(probabilities))
        digest = request_digest(body)

        self.store.record_escalation(
            EscalationRecord(
                device_id=header.device_id,
                nonce=header.nonce,
                seq=header.seq,
                sent_at_ms=header.timestamp_ms,
                model_id=header.model_id,
                model_version=header.model_version,
                label=label,
                request_digest=digest,
            )
        )
        answer = Answer(
            request_digest=digest,
            hub_key_id=self.identity.key_id,
            model_id=manifest.model_id,
            model_version=manifest.model_version,
            label=label,
            probabilities=Tensor.from_numpy(probabilities, "float32"),
            timestamp_ms=now_ms,
        )
        return sign_answer(answer, self.identity.signing_key)

    def _validated_embedding(self, tensor: Tensor) -> np.ndarray[tuple[int], np.dtype[np.float32]]:
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
        return values.reshape(manifest.embedding_dim)
