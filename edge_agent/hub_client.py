"""Talking to a hub: attest it, then send sealed envelopes and check its signed answers.

No escalation happens without an attestation bundle that `check_bundle` trusts: the client
attests with a fresh nonce before the first escalation, again when the hub says its key changed
(``unknown_hub_key``) and when the last appraisal is older than `attestation_ttl_s`.

A circuit breaker (`edge_agent.breaker`) sits in front of every call. It opens when the hub is
unreachable or slow, answers 5xx or 429, refuses attestation, or refuses this device (unknown,
revoked, quarantined): then the application gets a local answer at once, labelled degraded, and
one probe at a time finds out when the hub is back. An embedding the hub refuses is that
input's problem, not the hub's: it does not open the breaker.

The clock and the transport are injected, so the breaker, the TTL and re-attestation are
tested directly without sleeping or a network.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from attestation import AppraisalPolicy, AttestationBundle, Verdict
from attestation.binding import NONCE_SIZE
from edge_agent.breaker import Breaker, BreakerState
from edge_agent.bundle_check import BundleCheck, HubKeys, check_bundle
from edge_agent.errors import AttestationRefused, HubUnavailable, TransportError
from edge_agent.identity import DeviceIdentity
from edge_agent.transport import AiohttpTransport, Reply, Transport
from escalade_protocol import envelope
from escalade_protocol.answer import Answer, request_digest, verify_answer
from escalade_protocol.artifacts import ModelManifest
from escalade_protocol.device_reports import NONCE_SIZE as REPORT_NONCE_SIZE
from escalade_protocol.device_reports import (
    REPORT_CONTENT_TYPE,
    AuditReveal,
    DeviceReport,
    verify_ack,
)
from escalade_protocol.envelope import HpkeSuiteId
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PublicKey, X25519PublicKey
from escalade_protocol.messages import (
    AnswerReason,
    AttestationRequest,
    ErrorBody,
    ReplicaListRequest,
)
from escalade_protocol.provenance import NO_COMMITMENT, SALT_SIZE, Revealed, seal_reveal
from escalade_protocol.replica_list import NONCE_SIZE as REPLICA_NONCE_SIZE
from escalade_protocol.replica_list import ReplicaList, verify_replica_list
from escalade_protocol.tensor import Tensor

log = logging.getLogger("edge_agent.hub")

ENVELOPE_CONTENT_TYPE = "application/vnd.escalade.envelope"
Clock = Callable[[], float]

# Hub refusals that say "this device may not escalate": the hub is fine, the device is not.
DEVICE_REFUSALS = frozenset(
    {
        ErrorCode.UNKNOWN_DEVICE,
        ErrorCode.DEVICE_PENDING,
        ErrorCode.DEVICE_REVOKED,
        ErrorCode.DEVICE_QUARANTINED,
    }
)


@dataclass(frozen=True, slots=True)
class AttestedHub:
    keys: HubKeys
    verdict: Verdict
    attested_at: float
    # The share of escalations this hub audits (from its attested bundle).
    audit_rate: float = 0.0

    @property
    def key_id(self) -> bytes:
        return self.keys.key_id

    @property
    def encryption_key(self) -> X25519PublicKey:
        return self.keys.encryption_key

    @property
    def signing_key(self) -> Ed25519PublicKey:
        return self.keys.signing_key


@dataclass(frozen=True, slots=True)
class EscalationResult:
    answer: Answer
    verdict: Verdict
    bytes_sent: int
    # The request's digest (what an audit names it by) and the input and salt its envelope
    # committed to (None: sent without an input, so it cannot be revealed).
    request_digest: bytes = b""
    revealed: Revealed | None = None
    # The hub that answered: an audit's reveal goes to it (it is sealed to its key).
    hub: AttestedHub | None = None


@dataclass(frozen=True, slots=True)
class HubStatus:
    """What `/v1/health` and `/metrics` say about the hub."""

    breaker: BreakerState
    attested: bool
    last_verdict: Verdict | None
    # The last failure that opened the breaker, with the hub's code; None once it closed.
    failure: AnswerReason | None
    failure_code: ErrorCode | None
    failure_detail: str


class HubClient:
    def __init__(
        self,
        transport: Transport | aiohttp.ClientSession,
        *,
        identity: DeviceIdentity,
        base_url: str | None = None,
        manifest: ModelManifest,
        policy: AppraisalPolicy,
        attestation_ttl_s: float = 3600.0,
        timeout_s: float = 5.0,
        breaker_cooldown_s: float = 0.25,
        breaker_max_cooldown_s: float = 5.0,
        clock: Clock = time.monotonic,
        nonce: Callable[[], bytes] = lambda: secrets.token_bytes(NONCE_SIZE),
        expected_key_id: bytes | None = None,
        minimum_suite: HpkeSuiteId = HpkeSuiteId.X25519,
    ) -> None:
        if isinstance(transport, aiohttp.ClientSession):
            # The older form, HubClient(session, base_url=...), as bench/escalation.py uses it.
            if base_url is None:
                raise TypeError("HubClient(session, ...) needs base_url=")
            transport = AiohttpTransport(transport, base_url)
        self._transport: Transport = transport
        self._identity = identity
        self._manifest = manifest
        self._policy = policy
        self._ttl = attestation_ttl_s
        self._timeout = timeout_s
        self._clock = clock
        self._nonce = nonce
        # The key id a discovery advertisement claims (its `kfp`): evidence binding other keys
        # is refused, so a LAN announcement cannot point the agent at another hub's identity.
        self._expected_key_id = expected_key_id
        # The weakest HPKE suite this device seals with (config `min_hpke_suite`).
        self._minimum_suite = minimum_suite
        self._breaker = Breaker(
            cooldown_s=breaker_cooldown_s,
            max_cooldown_s=breaker_max_cooldown_s,
            probe_lease_s=timeout_s,
        )
        self._hub: AttestedHub | None = None
        self._last_check: BundleCheck | None = None
        self._failure: HubUnavailable | None = None
        # Set while the hub refuses this device itself (unknown, revoked, quarantined); cleared
        # by the next call the hub accepts from this device (escalation or device report).
        self.device_refusal: HubUnavailable | None = None
        self._attest_lock = asyncio.Lock()
        # Sequence numbers start from the clock so they keep rising across restarts.
        self._seq = time.time_ns() // 1000

    # --- what the rest of the agent reads ----------------------------------------------------

    @property
    def hub_up(self) -> bool:
        """False while the breaker refuses requests (open, or half-open with a probe out)."""
        return self._breaker.allows(self._clock())

    @property
    def last_verdict(self) -> Verdict | None:
        return self._last_check.verdict if self._last_check is not None else None

    @property
    def attested(self) -> AttestedHub | None:
        """The attested hub while its appraisal holds: within the TTL and before the verdict's
        collateral or certificates go stale (`valid_for_s`), whichever ends first."""
        hub = self._hub
        if hub is None:
            return None
        lifetime = self._ttl
        valid_for = hub.verdict.valid_for_s
        if valid_for is not None:
            lifetime = min(lifetime, valid_for)
        if self._clock() - hub.attested_at > lifetime:
            return None
        return hub

    def status(self) -> HubStatus:
        failure = self._failure
        return HubStatus(
            breaker=self._breaker.state(self._clock()),
            attested=self.attested is not None,
            last_verdict=self.last_verdict,
            failure=failure.reason if failure is not None else None,
            failure_code=failure.code if failure is not None else None,
            failure_detail=str(failure) if failure is not None else "",
        )

    def retry_in(self) -> float:
        return self._breaker.retry_in(self._clock())

    # --- attestation -------------------------------------------------------------------------

    async def attest(self) -> AttestedHub:
        """Fetch evidence for a fresh nonce and check it; raise `AttestationRefused` if refused."""
        nonce = self._nonce()
        body = AttestationRequest(nonce=nonce).model_dump_json().encode()
        raw = await self._call("/v1/attestation", body, "application/json")
        try:
            bundle = AttestationBundle.model_validate_json(raw)
        except ValidationError:
            failure = HubUnavailable(AnswerReason.ATTESTATION_REFUSED, "hub sent bad evidence")
            raise self._failed(failure) from None
        check = check_bundle(
            bundle,
            nonce=nonce,
            policy=self._policy,
            manifest=self._manifest,
            minimum_suite=self._minimum_suite,
        )
        self._last_check = check
        if not check.trusted or check.keys is None or check.verdict is None:
            raise self._failed(AttestationRefused(check))
        expected = self._expected_key_id
        if expected is not None and check.keys.key_id != expected:
            failure = HubUnavailable(
                AnswerReason.ATTESTATION_REFUSED,
                f"hub attestation refused: advertised kfp {expected.hex()} is not the key id "
                f"{check.keys.key_id.hex()} its evidence binds",
            )
            raise self._failed(failure)
        hub = AttestedHub(
            keys=check.keys,
            verdict=check.verdict,
            attested_at=self._clock(),
            audit_rate=bundle.model.audit_rate,
        )
        log.info("hub attested: key %s, %s", hub.key_id.hex()[:16], check.verdict.summary())
        return hub

    async def _attested(self, *, refresh: bool = False) -> AttestedHub:
        async with self._attest_lock:
            hub = None if refresh else self.attested
            if hub is None:
                self._hub = None
                hub = self._hub = await self.attest()
            return hub

    async def ensure_attested(self) -> AttestedHub:
        """Attest now unless a fresh appraisal is at hand (start-up, outbox delivery)."""
        self._admit()
        return await self._attested()

    async def probe(self) -> AttestedHub:
        """Attest afresh (the hub may have restarted with new keys): the breaker's probe."""
        self._admit()
        return await self._attested(refresh=True)

    @property
    def healthy(self) -> bool:
        return self._failure is None and self._breaker.state(self._clock()) is BreakerState.CLOSED

    # --- escalation --------------------------------------------------------------------------

    async def escalate(
        self,
        embedding: npt.NDArray[np.float32],
        *,
        features: npt.NDArray[np.float32] | None = None,
        local_probs: npt.NDArray[np.float32] | None = None,
    ) -> EscalationResult:
        """Send one embedding; with `features` (the input it encodes) the envelope commits to
        that input, so that the device can answer the hub's audit of it. `local_probs`: the
        edge head's probabilities, sealed beside the embedding for the hub to fuse with."""
        self._admit()
        hub = await self._attested()
        try:
            try:
                result = await self._send(hub, embedding, features, local_probs)
            except HubUnavailable as exc:
                if exc.code is not ErrorCode.UNKNOWN_HUB_KEY:
                    raise
                # The hub restarted with new keys: appraise its new identity, then retry once.
                log.info("hub key changed: attesting again")
                hub = await self._attested(refresh=True)
                result = await self._send(hub, embedding, features, local_probs)
        except HubUnavailable as exc:
            if exc.reason is AnswerReason.DEVICE_REFUSED:
                self.device_refusal = exc
            raise
        self.device_refusal = None
        return result

    async def _send(
        self,
        hub: AttestedHub,
        embedding: npt.NDArray[np.float32],
        features: npt.NDArray[np.float32] | None,
        local_probs: npt.NDArray[np.float32] | None = None,
    ) -> EscalationResult:
        m = self._manifest
        payload = Tensor.from_numpy(embedding, m.wire_dtype)
        revealed, commitment = None, NO_COMMITMENT
        if features is not None:
            revealed = Revealed(
                salt=os.urandom(SALT_SIZE),
                input=Tensor.from_numpy(np.asarray(features, np.float32).reshape(-1), "float32"),
            )
            commitment = revealed.commitment(payload.encode())
        self._seq += 1
        header = envelope.EnvelopeHeader(
            device_id=self._identity.device_id,
            model_id=m.model_id,
            model_version=m.model_version,
            seq=self._seq,
            timestamp_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(envelope.NONCE_SIZE),
            hub_key_id=hub.key_id,
            commitment=commitment,
            suite=hub.keys.suite,
        )
        sealed = envelope.seal(
            header,
            envelope.EscalationPayload(
                payload,
                None
                if local_probs is None
                else Tensor.from_numpy(np.asarray(local_probs, np.float32), "float32"),
            ),
            device_key=self._identity.key,
            hub_key=hub.keys.sealing_key,
        )
        raw = await self._call("/v1/escalate", sealed, ENVELOPE_CONTENT_TYPE)
        digest = request_digest(sealed)
        try:
            answer = verify_answer(raw, hub.keys.signing_key, expected_digest=digest)
        except ProtocolError as exc:
            failure = HubUnavailable(AnswerReason.BAD_ANSWER, f"hub answer rejected: {exc}")
            raise self._failed(failure) from None
        return EscalationResult(
            answer=answer,
            verdict=hub.verdict,
            bytes_sent=len(sealed),
            request_digest=digest,
            revealed=revealed,
            hub=hub,
        )

    async def reveal(self, hub: AttestedHub, request_digest: bytes, revealed: Revealed) -> None:
        """Answer an audit: the input and salt behind one escalation, sealed to the hub that
        asked, in a signed device report; returns once the hub's signed ack lists it."""
        item = AuditReveal(
            record_id=uuid.uuid4(),
            request_digest=request_digest,
            sealed=seal_reveal(
                revealed,
                hub.keys.sealing_key,
                request_digest=request_digest,
                suite=hub.keys.suite,
            ),
        )
        report = DeviceReport(
            device_id=self._identity.device_id,
            sent_at_ms=time.time_ns() // 1_000_000,
            nonce=os.urandom(REPORT_NONCE_SIZE),
            hub_key_id=hub.key_id,
            items=(item,),
        ).sign(self._identity.key)
        raw = await self.post("/v1/device-reports", report, REPORT_CONTENT_TYPE)
        try:
            ack = verify_ack(raw, hub.signing_key, report=report)
        except ProtocolError as exc:
            failure = HubUnavailable(AnswerReason.BAD_ANSWER, f"hub ack rejected: {exc}")
            raise self._failed(failure) from None
        if item.record_id not in ack.known:
            raise HubUnavailable(AnswerReason.BAD_ANSWER, "hub did not acknowledge the reveal")

    async def replicas(self) -> ReplicaList:
        """The hub's live replicas, signed by its attested key and bound to a fresh nonce."""
        self._admit()
        hub = await self._attested()
        nonce = os.urandom(REPLICA_NONCE_SIZE)
        body = ReplicaListRequest(nonce=nonce).model_dump_json().encode()
        raw = await self._call("/v1/replicas", body, "application/json")
        try:
            return verify_replica_list(raw, hub.signing_key, issuer_key_id=hub.key_id, nonce=nonce)
        except ProtocolError as exc:
            failure = HubUnavailable(AnswerReason.BAD_ANSWER, f"hub replica list rejected: {exc}")
            raise self._failed(failure) from None

    async def post(self, path: str, body: bytes, content_type: str) -> bytes:
        """A signed device call besides escalation (device reports), through the same breaker."""
        self._admit()
        raw = await self._call(path, body, content_type)
        self.device_refusal = None
        return raw

    # --- the breaker around every call -------------------------------------------------------

    def _admit(self) -> None:
        allowed, self._breaker = self._breaker.admit(self._clock())
        if not allowed:
            failure = self._failure
            raise HubUnavailable(
                failure.reason if failure is not None else AnswerReason.HUB_UNREACHABLE,
                f"hub calls paused for {self.retry_in():.2f} s after: {failure}",
                code=failure.code if failure is not None else None,
            )

    def _failed(self, exc: HubUnavailable) -> HubUnavailable:
        """Record a failure that opens the breaker; the caller raises what this returns."""
        self._breaker = self._breaker.failed(self._clock())
        if self._failure is None or self._failure.reason is not exc.reason:
            log.warning("hub unusable (%s): %s; answering locally", exc.reason.value, exc)
        self._failure = exc
        return exc

    def _succeeded(self) -> None:
        if self._failure is not None:
            log.info("hub usable again after %s", self._failure.reason.value)
        self._failure = None
        self._breaker = self._breaker.succeeded()

    async def _call(self, path: str, body: bytes, content_type: str) -> bytes:
        try:
            reply = await self._transport.post(
                path, body, content_type=content_type, timeout_s=self._timeout
            )
        except TransportError as exc:
            reason = AnswerReason.HUB_TIMEOUT if exc.timeout else AnswerReason.HUB_UNREACHABLE
            raise self._failed(HubUnavailable(reason, str(exc))) from None
        if reply.status < 400:
            self._succeeded()
            return reply.body
        refusal = _refusal(reply)
        if refusal.reason is AnswerReason.HUB_REJECTED and refusal.code not in (
            None,
            ErrorCode.INTERNAL,
        ):
            # The hub is up and refused this one request (bad embedding, stale key): the
            # breaker stays as it is; the caller decides what to do.
            self._succeeded()
            log.info("hub refused a request: %s", refusal)
            raise refusal
        raise self._failed(refusal)


def _refusal(reply: Reply) -> HubUnavailable:
    try:
        error = ErrorBody.model_validate_json(reply.body)
    except ValueError:
        reason = AnswerReason.HUB_UNREACHABLE if reply.status >= 500 else AnswerReason.HUB_REJECTED
        return HubUnavailable(reason, f"hub answered HTTP {reply.status}")
    code = error.code
    if code in DEVICE_REFUSALS:
        return HubUnavailable(
            AnswerReason.DEVICE_REFUSED, f"hub refuses this device: {error.message}", code=code
        )
    if code is ErrorCode.RATE_LIMITED:
        return HubUnavailable(AnswerReason.HUB_RATE_LIMITED, error.message, code=code)
    if reply.status >= 500:
        return HubUnavailable(
            AnswerReason.HUB_UNREACHABLE, f"hub failed ({code.value}): {error.message}", code=code
        )
    return HubUnavailable(AnswerReason.HUB_REJECTED, f"{code.value}: {error.message}", code=code)


__all__ = ["AttestationRefused", "AttestedHub", "EscalationResult", "HubClient", "HubStatus"]
