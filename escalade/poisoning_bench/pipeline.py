"""Malformed and replayed messages through the hub's real pipeline and database.

These attacks are not the statistical tiers' business: the pipeline refuses them first
(dtype, shape, finite values; the unique (device, nonce) record). Running the real code keeps
the "100% caught" figures measured rather than asserted.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from cloud_hub.enrollment import create_token, enroll
from cloud_hub.escalation import EscalationPipeline
from cloud_hub.identity import HubIdentity
from cloud_hub.serving import HubModel
from cloud_hub.store import Store, sqlite_url
from escalade_protocol import envelope
from escalade_protocol.errors import ProtocolError
from escalade_protocol.keys import Ed25519PrivateKey, public_bytes
from escalade_protocol.messages import EnrollRequest, enrollment_proof_bytes
from escalade_protocol.tensor import Tensor


class PipelineOutcome:
    """Per malformed kind: refused / sent; plus replays refused and honest refusals."""

    def __init__(self) -> None:
        self.malformed: dict[str, tuple[int, int]] = {}
        self.replays: tuple[int, int] = (0, 0)
        self.honest: tuple[int, int] = (0, 0)


def _malformed(clean: NDArray[np.float32], kind: str, dim: int) -> Tensor:
    if kind == "wrong_dim":
        return Tensor.from_numpy(np.concatenate([clean, clean[:1]]), "float16")
    if kind == "wrong_dtype":
        return Tensor.from_numpy(clean, "float32")
    bad = clean.copy()
    bad[dim // 2] = np.nan if kind == "nan" else np.inf
    return Tensor.from_numpy(bad, "float16")


MALFORMED_KINDS = ("wrong_dim", "wrong_dtype", "nan", "inf")


def run_pipeline_attacks(
    bundle_dir: Path, data_dir: Path, clean: NDArray[np.float32], per_kind: int
) -> PipelineOutcome:
    store = Store.open(sqlite_url(data_dir), migrate=True)
    try:
        hub = EscalationPipeline(identity=HubIdentity.generate(), model=HubModel(bundle_dir))
        key = Ed25519PrivateKey.generate()
        token, _ = create_token(store)
        public = public_bytes(key.public_key())
        device_id = enroll(
            store,
            EnrollRequest(
                token=token,
                public_key=public,
                proof=key.sign(enrollment_proof_bytes(token, public)),
            ),
        )
        m = hub.model.manifest

        def seal(payload: Tensor, seq: int) -> bytes:
            header = envelope.EnvelopeHeader(
                device_id=device_id,
                model_id=m.model_id,
                model_version=m.model_version,
                seq=seq,
                timestamp_ms=time.time_ns() // 1_000_000,
                nonce=uuid.uuid4().bytes,
                hub_key_id=hub.identity.key_id,
            )
            return envelope.seal(
                header, payload, device_key=key, hub_key=hub.identity.encryption_key.public_key()
            )

        def refused(body: bytes) -> bool:
            try:
                hub.process(body, store)
            except ProtocolError:
                return True
            return False

        outcome = PipelineOutcome()
        seq = 0
        for kind in MALFORMED_KINDS:
            caught = 0
            for i in range(per_kind):
                seq += 1
                caught += refused(
                    seal(_malformed(clean[i % len(clean)], kind, m.embedding_dim), seq)
                )
            outcome.malformed[kind] = (caught, per_kind)
        accepted: list[bytes] = []
        honest_refused = 0
        for i in range(per_kind):
            seq += 1
            body = seal(Tensor.from_numpy(clean[i % len(clean)], "float16"), seq)
            if refused(body):
                honest_refused += 1
            else:
                accepted.append(body)
        outcome.honest = (honest_refused, per_kind)
        outcome.replays = (sum(refused(body) for body in accepted), len(accepted))
        return outcome
    finally:
        store.close()
