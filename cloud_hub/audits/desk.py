"""The audits this hub is waiting on, from the answer that asked until the reveal or deadline.

Pending audits live in the enclave's memory, never in the database: they hold the embedding
the device sent (no embedding is ever stored), and the reveal is sealed to this replica's key
anyway, so no other replica could check it. A hub that restarts forgets its pending audits;
that loses audits, never quarantines an honest device. Used on the event loop only.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloud_hub.audits.sampling import AuditSampler

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPolicy:
    # Share of answered escalations audited; 0 turns audits off (a fleet policy: revealed
    # inputs reach the attested enclave, docs/threat-model.md).
    rate: float = 0.0
    # How long a device has to reveal: covers its outbox retries and a hub restart or two.
    deadline_s: float = 120.0
    # Relative L2 distance allowed between the embedding sent and the re-encoded one: float16
    # on the wire costs up to ~5e-4 and execution providers differ by less than 1e-5 here
    # (docs/provenance.md); tampering moves embeddings by 0.1 and more.
    tolerance: float = 0.01
    # At most this many audits wait at once (memory bound); beyond it, no new ones are asked.
    max_pending: int = 65_536


@dataclass(frozen=True, slots=True)
class PendingAudit:
    device_id: uuid.UUID
    generation: int
    request_digest: bytes
    commitment: bytes
    # The embedding as received (float32 of the wire values) and the whole signed envelope:
    # the device's signature over the header, commitment included, is the proof.
    embedding: F32
    envelope: bytes
    model_version: int
    deadline: float


class AuditDesk:
    def __init__(
        self,
        policy: AuditPolicy,
        *,
        sampler: AuditSampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._sampler = sampler or AuditSampler()
        self._clock = clock
        # Insertion order is deadline order (one deadline for all): expiry pops from the front.
        self._pending: OrderedDict[bytes, PendingAudit] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def consider(
        self,
        *,
        device_id: uuid.UUID,
        generation: int,
        request_digest: bytes,
        commitment: bytes,
        embedding: F32,
        envelope: bytes,
        model_version: int,
    ) -> bool:
        """Whether to audit this answered escalation; if so it now waits for its reveal."""
        policy = self.policy
        if not self._sampler.selected(request_digest, policy.rate):
            return False
        if len(self._pending) >= policy.max_pending:
            return False
        self._pending[request_digest] = PendingAudit(
            device_id=device_id,
            generation=generation,
            request_digest=request_digest,
            commitment=commitment,
            embedding=embedding,
            envelope=envelope,
            model_version=model_version,
            deadline=self._clock() + policy.deadline_s,
        )
        return True

    def take(self, device_id: uuid.UUID, request_digest: bytes) -> PendingAudit | None:
        """The pending audit a reveal answers, removed; None if none waits (or another device's)."""
        pending = self._pending.get(request_digest)
        if pending is None or pending.device_id != device_id:
            return None
        del self._pending[request_digest]
        return pending

    def expired(self) -> list[PendingAudit]:
        """Audits whose deadline passed with no reveal, removed."""
        now, due = self._clock(), []
        while self._pending:
            digest, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                break
            del self._pending[digest]
            due.append(pending)
        return due
