"""Talking to a hub: attest it, then send sealed envelopes and check its signed answers.

No escalation happens without an appraisal that allows it: the first escalation attests the
hub with a fresh nonce, and the client attests again when the hub says its key changed or the
last appraisal is older than `attestation_ttl_s`. Connection failures open a short circuit
breaker so that a dead hub costs the application nothing but a local answer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass

import aiohttp
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from attestation import AppraisalPolicy, AttestationBundle, Verdict, appraise, report_data
from attestation.binding import NONCE_SIZE
from edge_agent.errors import AttestationRefused, HubUnavailable
from edge_agent.identity import DeviceIdentity
from escalade_protocol import envelope
from escalade_protocol.answer import Answer, request_digest, verify_answer
from escalade_protocol.artifacts import ModelManifest
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import (
    Ed25519PublicKey,
    X25519PublicKey,
    hub_key_id,
    load_ed25519_public,
    load_x25519_public,
)
from escalade_protocol.messages import AttestationRequest, ErrorBody
from escalade_protocol.tensor import Tensor

ENVELOPE_CONTENT_TYPE = "application/vnd.escalade.envelope"
_DEVICE_REFUSALS = frozenset(
    f"hub_rejected:{code.value}"
    for code in (ErrorCode.DEVICE_QUARANTINED, ErrorCode.DEVICE_REVOKED)
)


@dataclass(frozen=True, slots=True)
class AttestedHub:
    key_id: bytes
    encryption_key: X25519PublicKey
    signing_key: Ed25519PublicKey
    verdict: Verdict
    attested_at: float


@dataclass(frozen=True, slots=True)
class EscalationResult:
    answer: Answer
    verdict: Verdict
    bytes_sent: int


class HubClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        base_url: str,
        identity: DeviceIdentity,
        manifest: ModelManifest,
        policy: AppraisalPolicy,
        attestation_ttl_s: float = 3600.0,
        timeout_s: float = 5.0,
        breaker_cooldown_s: float = 5.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._identity = identity
        self._manifest = manifest
        self._policy = policy
        self._ttl = attestation_ttl_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._cooldown = breaker_cooldown_s
        self._hub: AttestedHub | None = None
        self._last_verdict: Verdict | None = None
        # Set while the hub refuses this device itself (quarantined, revoked), for /v1/health.
        self.device_refusal: str | None = None
        self._attest_lock = asyncio.Lock()
        self._down_until = 0.0
        # Sequence numbers start from the clock so they keep rising across restarts.
        self._seq = time.time_ns() // 1000

    @property
    def hub_up(self) -> bool:
        """False while the circuit breaker is open after the hub could not be reached."""
        return time.monotonic() >= self._down_until

    @property
    def last_verdict(self) -> Verdict | None:
        return self._last_verdict

    async def attest(self) -> AttestedHub:
        """Fetch fresh evidence for a new nonce and appraise it; raise if it is refused."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        body = AttestationRequest(nonce=nonce).model_dump_json()
        raw = await self._post("/v1/attestation", body.encode(), "application/json")
        try:
            bundle = AttestationBundle.model_validate_json(raw)
        except ValidationError as exc:
            raise HubUnavailable("attestation_refused", f"malformed evidence: {exc}") from exc
        if bundle.nonce != nonce:
            raise HubUnavailable("attestation_refused", "hub answered another nonce")
        if bundle.hub_key_id != hub_key_id(bundle.encryption_key, bundle.signing_key):
            raise HubUnavailable("attestation_refused", "hub key id does not match its keys")
        verdict = appraise(
            bundle.evidence,
            expected_report_data=report_data(
                encryption_key=bundle.encryption_key, signing_key=bundle.signing_key, nonce=nonce
            ),
            policy=self._policy,
        )
        self._last_verdict = verdict
        if not verdict.allows_escalation:
            raise AttestationRefused(verdict)
        m = self._manifest
        if (bundle.model.model_id, bundle.model.model_version) != (m.model_id, m.model_version):
            raise HubUnavailable(
                "model_mismatch",
                f"hub serves {bundle.model.model_id} v{bundle.model.model_version}, "
                f"this device runs {m.model_id} v{m.model_version}",
            )
        return AttestedHub(
            key_id=bundle.hub_key_id,
            encryption_key=load_x25519_public(bundle.encryption_key),
            signing_key=load_ed25519_public(bundle.signing_key),
            verdict=verdict,
            attested_at=time.monotonic(),
        )

    async def _attested(self, *, refresh: bool = False) -> AttestedHub:
        async with self._attest_lock:
            hub = self._hub
            if refresh or hub is None or time.monotonic() - hub.attested_at > self._ttl:
                self._hub = None
                hub = self._hub = await self.attest()
            return hub

    async def escalate(self, embedding: npt.NDArray[np.float32]) -> EscalationResult:
        if time.monotonic() < self._down_until:
            raise HubUnavailable("hub_unreachable", "hub is in circuit-breaker cooldown")
        hub = await self._attested()
        try:
            try:
                result = await self._send(hub, embedding)
            except HubUnavailable as exc:
                if exc.reason != f"hub_rejected:{ErrorCode.UNKNOWN_HUB_KEY.value}":
                    raise
                # The hub restarted with new keys: appraise the new identity, then retry once.
                result = await self._send(await self._attested(refresh=True), embedding)
        except HubUnavailable as exc:
            if exc.reason in _DEVICE_REFUSALS:
                self.device_refusal = exc.reason.removeprefix("hub_rejected:")
            raise
        self.device_refusal = None
        return result

    async def _send(self, hub: AttestedHub, embedding: npt.NDArray[np.float32]) -> EscalationResult:
        m = self._manifest
        self._seq += 1
        header = envelope.EnvelopeHeader(
            device_id=self._identity.device_id,
            model_id=m.model_id,
            model_version=m.model_version,
            seq=self._seq,
            timestamp_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(envelope.NONCE_SIZE),
            hub_key_id=hub.key_id,
        )
        payload = Tensor.from_numpy(embedding, m.wire_dtype)
        sealed = envelope.seal(
            header, payload, device_key=self._identity.key, hub_key=hub.encryption_key
        )
        raw = await self._post("/v1/escalate", sealed, ENVELOPE_CONTENT_TYPE)
        try:
            answer = verify_answer(raw, hub.signing_key, expected_digest=request_digest(sealed))
        except ProtocolError as exc:
            raise HubUnavailable("bad_answer", f"hub answer rejected: {exc}") from exc
        return EscalationResult(answer=answer, verdict=hub.verdict, bytes_sent=len(sealed))

    async def _post(self, path: str, data: bytes, content_type: str) -> bytes:
        try:
            async with self._http.post(
                self._base + path,
                data=data,
                headers={"Content-Type": content_type},
                timeout=self._timeout,
            ) as response:
                body = await response.read()
                if response.status >= 400:
                    raise _rejection(response.status, body)
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + self._cooldown
            raise HubUnavailable(
                "hub_unreachable", f"hub at {self._base} unreachable: {exc!r}"
            ) from exc


def _rejection(status: int, body: bytes) -> HubUnavailable:
    try:
        error = ErrorBody.model_validate_json(body)
    except ValueError:
        return HubUnavailable(f"hub_rejected:http_{status}", f"hub answered HTTP {status}")
    return HubUnavailable(f"hub_rejected:{error.code.value}", error.message)
