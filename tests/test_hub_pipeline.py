"""The hub's escalation pipeline against a real database and the real hub model.

Every refusal must carry its stable code and leave the database exactly as it was.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from enrollment import enroll_request

from cloud_hub.enrollment import create_token, enroll
from cloud_hub.escalation import EscalationPipeline
from cloud_hub.identity import HubIdentity
from cloud_hub.serving import HubModel
from cloud_hub.store import Store
from escalade_protocol import envelope
from escalade_protocol.answer import request_digest, verify_answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PrivateKey, X25519PrivateKey
from escalade_protocol.tensor import Tensor


@pytest.fixture(scope="module")
def hub_model(bundle_dir: Path) -> HubModel:
    return HubModel(bundle_dir)


class Device:
    def __init__(self, store: Store) -> None:
        self.key = Ed25519PrivateKey.generate()
        token, _ = create_token(store)
        self.device_id = enroll(store, enroll_request(token, self.key))


@pytest.fixture
def hub(store: Store, hub_model: HubModel) -> EscalationPipeline:
    return EscalationPipeline(identity=HubIdentity.generate(), model=hub_model)


def header_for(
    hub: EscalationPipeline, device: Device, **changes: object
) -> envelope.EnvelopeHeader:
    m = hub.model.manifest
    header = envelope.EnvelopeHeader(
        device_id=device.device_id,
        model_id=m.model_id,
        model_version=m.model_version,
        seq=1,
        timestamp_ms=int(time.time() * 1000),
        nonce=uuid.uuid4().bytes,
        hub_key_id=hub.identity.key_id,
    )
    return replace(header, **changes)  # type: ignore[arg-type]


CLEAN: list[npt.NDArray[np.float32]] = []


@pytest.fixture(autouse=True)
def _clean(clean_embedding: npt.NDArray[np.float32]) -> None:
    CLEAN[:] = [clean_embedding]


def embedding_for(hub: EscalationPipeline) -> Tensor:
    """A real, in-distribution embedding: these tests are about the protocol checks."""
    return Tensor.from_numpy(CLEAN[0], hub.model.manifest.wire_dtype)


def seal_for(
    hub: EscalationPipeline,
    device: Device,
    payload: Tensor | None = None,
    *,
    signing_key: Ed25519PrivateKey | None = None,
    **changes: object,
) -> bytes:
    return envelope.seal(
        header_for(hub, device, **changes),
        payload if payload is not None else embedding_for(hub),
        device_key=signing_key or device.key,
        hub_key=hub.identity.encryption_key.public_key(),
    )


def test_accepted_escalation_is_answered_signed_and_recorded(
    hub: EscalationPipeline, store: Store
) -> None:
    device = Device(store)
    sealed = seal_for(hub, device)
    raw = hub.process(sealed, store)
    answer = verify_answer(
        raw, hub.identity.signing_key.public_key(), expected_digest=request_digest(sealed)
    )
    assert 0 <= answer.label < hub.model.manifest.num_classes
    probabilities = answer.probabilities.to_numpy()
    assert probabilities.shape == (hub.model.manifest.num_classes,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-4
    assert store.counts().escalations == 1


def _assert_refused(
    hub: EscalationPipeline, store: Store, body: bytes, code: ErrorCode, **kwargs: int
) -> None:
    before = store.counts()
    with pytest.raises(ProtocolError) as info:
        hub.process(body, store, **kwargs)
    assert info.value.code is code, info.value.message
    assert store.counts() == before


def test_replayed_envelope_is_refused_and_not_recorded_twice(
    hub: EscalationPipeline, store: Store
) -> None:
    device = Device(store)
    sealed = seal_for(hub, device)
    hub.process(sealed, store)
    _assert_refused(hub, store, sealed, ErrorCode.REPLAYED_NONCE)
    assert store.counts().escalations == 1


def test_nonce_reuse_with_a_new_envelope_is_a_replay(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    hub.process(seal_for(hub, device, nonce=b"x" * 16, seq=1), store)
    _assert_refused(
        hub, store, seal_for(hub, device, nonce=b"x" * 16, seq=2), ErrorCode.REPLAYED_NONCE
    )


def test_same_nonce_from_two_devices_is_fine(hub: EscalationPipeline, store: Store) -> None:
    a, b = Device(store), Device(store)
    hub.process(seal_for(hub, a, nonce=b"y" * 16), store)
    hub.process(seal_for(hub, b, nonce=b"y" * 16), store)
    assert store.counts().escalations == 2


def test_bad_signature(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    body = seal_for(hub, device, signing_key=Ed25519PrivateKey.generate())
    _assert_refused(hub, store, body, ErrorCode.BAD_SIGNATURE)


def test_bad_ciphertext(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    body = envelope.seal(
        header_for(hub, device),
        embedding_for(hub),
        device_key=device.key,
        hub_key=X25519PrivateKey.generate().public_key(),  # right key id, wrong key
    )
    _assert_refused(hub, store, body, ErrorCode.BAD_CIPHERTEXT)


def test_unknown_device(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    body = seal_for(hub, device, device_id=uuid.uuid4())
    _assert_refused(hub, store, body, ErrorCode.UNKNOWN_DEVICE)


def test_revoked_device(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    assert store.set_device_status(device.device_id, "revoked", reason="lost")
    _assert_refused(hub, store, seal_for(hub, device), ErrorCode.DEVICE_REVOKED)


def test_pending_device(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    assert store.set_device_status(device.device_id, "pending", reason="awaiting approval")
    _assert_refused(hub, store, seal_for(hub, device), ErrorCode.DEVICE_PENDING)


@pytest.mark.parametrize("skew_ms", [-61_000, 61_000, -(10**9)])
def test_stale_timestamp(hub: EscalationPipeline, store: Store, skew_ms: int) -> None:
    device = Device(store)
    now = int(time.time() * 1000)
    body = seal_for(hub, device, timestamp_ms=now + skew_ms)
    _assert_refused(hub, store, body, ErrorCode.STALE_TIMESTAMP, now_ms=now)


def test_unknown_hub_key(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    _assert_refused(
        hub, store, seal_for(hub, device, hub_key_id=b"\0" * 16), ErrorCode.UNKNOWN_HUB_KEY
    )


def test_unknown_model(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    _assert_refused(hub, store, seal_for(hub, device, model_version=99), ErrorCode.UNKNOWN_MODEL)


def test_wrong_shape(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    m = hub.model.manifest
    for shape in [(m.embedding_dim + 1,), (1, m.embedding_dim), (0,)]:
        payload = Tensor.from_numpy(np.zeros(shape, np.float32), m.wire_dtype)
        _assert_refused(hub, store, seal_for(hub, device, payload), ErrorCode.BAD_TENSOR_SHAPE)


def test_wrong_dtype(hub: EscalationPipeline, store: Store) -> None:
    device = Device(store)
    m = hub.model.manifest
    other = "float32" if m.wire_dtype == "float16" else "float16"
    payload = Tensor.from_numpy(np.zeros(m.embedding_dim, np.float32), other)
    _assert_refused(hub, store, seal_for(hub, device, payload), ErrorCode.BAD_TENSOR_DTYPE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(hub: EscalationPipeline, store: Store, bad: float) -> None:
    device = Device(store)
    m = hub.model.manifest
    values = np.zeros(m.embedding_dim, np.float32)
    values[3] = bad
    payload = Tensor.from_numpy(values, m.wire_dtype)
    _assert_refused(hub, store, seal_for(hub, device, payload), ErrorCode.NON_FINITE)


@pytest.mark.parametrize("body", [b"", b"garbage", b"ESC1" + b"\xff" * 40])
def test_malformed(hub: EscalationPipeline, store: Store, body: bytes) -> None:
    _assert_refused(hub, store, body, ErrorCode.MALFORMED)


def test_enrollment_token_is_single_use_and_stored_hashed(store: Store) -> None:
    token, _ = create_token(store)
    enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))
    with pytest.raises(ProtocolError) as info:
        enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))
    assert info.value.code is ErrorCode.BAD_TOKEN
    with store.engine.connect() as conn:
        stored = [
            row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM enrollment_tokens")
        ]
    assert token not in stored
    assert len(stored) == 1


def test_bad_proof_of_possession_leaves_the_token_usable(store: Store) -> None:
    token, _ = create_token(store)
    forged = enroll_request(
        token, Ed25519PrivateKey.generate(), signer=Ed25519PrivateKey.generate()
    )
    before = store.counts()
    with pytest.raises(ProtocolError) as info:
        enroll(store, forged)
    assert info.value.code is ErrorCode.BAD_PROOF
    assert store.counts() == before
    assert store.counts().tokens_used == 0


def test_expired_token_is_refused(store: Store) -> None:
    token, _ = create_token(store, ttl=timedelta(seconds=-1))
    with pytest.raises(ProtocolError) as info:
        enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))
    assert info.value.code is ErrorCode.BAD_TOKEN
    assert store.counts().devices == 0
