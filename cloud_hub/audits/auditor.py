"""`Auditor`: asks for reveals, checks them by re-encoding, and turns a failure into proof.

On the hot path it only draws (`consider`, a keyed hash per answered escalation). A reveal,
arriving in a device report, is opened with the hub's key, checked against the commitment the
device signed, re-encoded on the auditor's own thread and compared. A failure — or no reveal by
the deadline — quarantines the device at once with `AuditProofEvidence`: the device's own
signed envelope (its signature covers the commitment, which binds input and embedding), what
was found and by how much. The revealed input is used for that one check and dropped: never
stored, never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from cloud_hub.audit import AuditProofEvidence
from cloud_hub.audits.desk import AuditDesk, AuditPolicy, PendingAudit
from cloud_hub.audits.reencoder import Reencoder
from cloud_hub.audits.verdict import AuditOutcome, RevealVerdict, judge_reveal
from cloud_hub.store import Device
from escalade_protocol import envelope
from escalade_protocol.device_reports import AuditReveal
from escalade_protocol.envelope import HpkeSuiteId, HubPrivateKey
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.provenance import open_reveal
from escalade_protocol.tensor import Tensor

log = logging.getLogger("cloud_hub.audits")

# (device id, generation, reason, evidence) -> quarantined now?
Quarantine = Callable[[uuid.UUID, int, str, AuditProofEvidence], Awaitable[bool]]
Counted = Callable[[AuditOutcome], None]


class Auditor:
    def __init__(
        self,
        policy: AuditPolicy,
        *,
        bundle_dir: Path,
        wire_dtype: str,
        hub_keys: Callable[[HpkeSuiteId], HubPrivateKey | None],
        quarantine: Quarantine,
        counted: Counted = lambda _outcome: None,
        desk: AuditDesk | None = None,
    ) -> None:
        self.desk = desk or AuditDesk(policy)
        self._bundle_dir = bundle_dir
        self._wire_dtype = wire_dtype
        # The hub's key for each suite it accepts (`HubIdentity.private_for`).
        self._hub_keys = hub_keys
        self._quarantine = quarantine
        self._counted = counted
        self._reencoder: Reencoder | None = None  # loaded when the first audit is asked
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-audit")
        self.set_rate(policy.rate)

    @property
    def policy(self) -> AuditPolicy:
        return self.desk.policy

    def set_rate(self, rate: float) -> None:
        """A new fleet policy: asks for audits at this rate from now on (pending ones stand)."""
        self.desk.policy = replace(self.desk.policy, rate=rate)
        if rate > 0 and self._reencoder is None:
            self._reencoder = Reencoder(self._bundle_dir)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    async def reveal(self, device: Device, item: AuditReveal) -> AuditOutcome | None:
        """Check one reveal; None when no audit of this device waits for it (already judged,
        expired, or asked by another replica)."""
        pending = self.desk.take(device.device_id, item.request_digest)
        if pending is None:
            return None
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(self._thread, self._judge, pending, item.sealed)
        await self._conclude(pending, verdict)
        return verdict.outcome

    def _judge(self, pending: PendingAudit, sealed: bytes) -> RevealVerdict:
        # The reveal is sealed with the suite of the escalation it answers.
        suite = envelope.parse(pending.envelope).header.suite
        hub_key = self._hub_keys(suite)
        try:
            if hub_key is None:
                raise ProtocolError(ErrorCode.UNSUPPORTED_SUITE, f"suite {suite.name}")
            revealed = open_reveal(
                sealed, hub_key, request_digest=pending.request_digest, suite=suite
            )
        except ProtocolError:
            return RevealVerdict(AuditOutcome.BAD_INPUT)
        sent = Tensor.from_numpy(pending.embedding, self._wire_dtype).encode()
        assert self._reencoder is not None
        return judge_reveal(
            committed=pending.commitment,
            recomputed=revealed.commitment(sent),
            sent=pending.embedding,
            reencoded=self._reencoder.embedding(revealed.input),
            tolerance=self.policy.tolerance,
        )

    async def expire(self) -> int:
        """Quarantine the devices whose audits reached their deadline unrevealed."""
        due = self.desk.expired()
        for pending in due:
            await self._conclude(pending, RevealVerdict(AuditOutcome.NO_REVEAL))
        return len(due)

    async def _conclude(self, pending: PendingAudit, verdict: RevealVerdict) -> None:
        self._counted(verdict.outcome)
        if verdict.passed:
            return
        evidence = AuditProofEvidence(
            outcome=verdict.outcome.value,
            request_digest=pending.request_digest.hex(),
            commitment=pending.commitment.hex(),
            envelope=pending.envelope.hex(),
            embedding_sha256=hashlib.sha256(pending.embedding.tobytes()).hexdigest(),
            distance=None if verdict.distance is None else round(verdict.distance, 6),
            tolerance=self.policy.tolerance,
            model_version=pending.model_version,
        )
        reason = f"audit failed: {verdict.outcome.value}"
        if verdict.distance is not None:
            reason += (
                f" (re-encoded {verdict.distance:.3g} away, tolerance {self.policy.tolerance})"
            )
        if await self._quarantine(pending.device_id, pending.generation, reason, evidence):
            log.warning("quarantined device %s: %s", pending.device_id, reason)
