"""The hub over real HTTP on loopback: status codes, error bodies, replay under concurrency,
group commit, and the device cache."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from enrollment import enroll_request

from cloud_hub.app import STATE, HubState, build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.devices import DeviceCache
from cloud_hub.enrollment import create_token, enroll
from cloud_hub.recorder import EscalationRecorder
from cloud_hub.store import EscalationRecord, Store
from escalade_protocol import envelope
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import (
    EnrollResponse,
    ErrorBody,
)
from escalade_protocol.tensor import Tensor


class Hub:
    def __init__(
        self,
        url: str,
        state: HubState,
        http: aiohttp.ClientSession,
        embedding: npt.NDArray[np.float32],
    ) -> None:
        self.url, self.state, self.http, self.embedding = url, state, http, embedding

    async def post(self, path: str, data: bytes | str) -> tuple[int, bytes]:
        async with self.http.post(self.url + path, data=data) as response:
            return response.status, await response.read()


@pytest.fixture
async def hub(
    bundle_dir: Path, tmp_path: Path, clean_embedding: npt.NDArray[np.float32]
) -> AsyncIterator[Hub]:
    config = HubConfig(
        data_dir=tmp_path, models_dir=bundle_dir, allow_simulated_tee=True, max_body_bytes=64 << 10
    )
    app = make_app(build_state(config))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield Hub(url, app[STATE], http, clean_embedding)
    finally:
        await runner.cleanup()


async def enroll_device(hub: Hub) -> tuple[uuid.UUID, Ed25519PrivateKey]:
    token, _ = create_token(hub.state.store)
    key = Ed25519PrivateKey.generate()
    status, body = await hub.post("/v1/enroll", enroll_request(token, key).model_dump_json())
    assert status == 201
    return EnrollResponse.model_validate_json(body).device_id, key


def sealed_for(hub: Hub, device_id: uuid.UUID, key: Ed25519PrivateKey) -> bytes:
    m = hub.state.model.manifest
    header = envelope.EnvelopeHeader(
        device_id=device_id,
        model_id=m.model_id,
        model_version=m.model_version,
        seq=1,
        timestamp_ms=int(time.time() * 1000),
        nonce=os.urandom(16),
        hub_key_id=hub.state.identity.key_id,
    )
    payload = Tensor.from_numpy(hub.embedding, m.wire_dtype)
    return envelope.seal(
        header, payload, device_key=key, hub_key=hub.state.identity.encryption_key.public_key()
    )


async def test_concurrent_copies_of_one_envelope_are_answered_once(hub: Hub) -> None:
    device_id, key = await enroll_device(hub)
    body = sealed_for(hub, device_id, key)
    results = await asyncio.gather(*(hub.post("/v1/escalate", body) for _ in range(8)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 7
    for status, raw in results:
        if status == 409:
            assert ErrorBody.model_validate_json(raw).code is ErrorCode.REPLAYED_NONCE
    assert hub.state.store.counts().escalations == 1


async def test_many_devices_in_flight_are_all_recorded(hub: Hub) -> None:
    devices = [await enroll_device(hub) for _ in range(4)]
    bodies = [sealed_for(hub, d, k) for d, k in devices for _ in range(10)]
    results = await asyncio.gather(*(hub.post("/v1/escalate", b) for b in bodies))
    assert all(status == 200 for status, _ in results)
    assert hub.state.store.counts().escalations == 40


@pytest.mark.parametrize(
    ("path", "data", "status", "code"),
    [
        ("/v1/escalate", b"not an envelope", 400, ErrorCode.MALFORMED),
        ("/v1/enroll", "{}", 400, ErrorCode.BAD_REQUEST),
        ("/v1/enroll", "not json", 400, ErrorCode.BAD_REQUEST),
        ("/v1/attestation", '{"nonce": "zz"}', 400, ErrorCode.BAD_REQUEST),
        ("/v1/attestation", '{"nonce": "00"}', 400, ErrorCode.BAD_REQUEST),
        ("/v1/escalate", b"x" * (100 << 10), 413, ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
async def test_bad_requests_get_a_stable_code_and_no_traceback(
    hub: Hub, path: str, data: bytes | str, status: int, code: ErrorCode
) -> None:
    before = hub.state.store.counts()
    got_status, raw = await hub.post(path, data)
    assert got_status == status
    error = ErrorBody.model_validate_json(raw)
    assert error.code is code
    assert "Traceback" not in error.message
    assert hub.state.store.counts() == before


async def test_unknown_route_is_a_json_404(hub: Hub) -> None:
    async with hub.http.get(hub.url + "/v1/nope") as response:
        assert response.status == 404
        assert ErrorBody.model_validate_json(await response.read()).code is ErrorCode.BAD_REQUEST


def _record(device_id: uuid.UUID, nonce: bytes) -> EscalationRecord:
    return EscalationRecord(
        device_id=device_id,
        nonce=nonce,
        seq=1,
        sent_at_ms=1,
        model_id="m",
        model_version=1,
        label=0,
        request_digest=b"d" * 32,
    )


def _enrolled(store: Store) -> uuid.UUID:
    token, _ = create_token(store)
    return enroll(store, enroll_request(token, Ed25519PrivateKey.generate()))


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "writer-thread"])
async def test_group_commit_refuses_only_the_replays_in_a_batch(
    store: Store, on_loop: bool
) -> None:
    device_id = _enrolled(store)
    recorder = EscalationRecorder(store, on_loop=on_loop)
    nonces = [os.urandom(16) for _ in range(20)]
    batch = [_record(device_id, n) for n in nonces] + [_record(device_id, nonces[3])]
    results = await asyncio.gather(*(recorder.record(r) for r in batch), return_exceptions=True)
    recorder.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], ProtocolError)
    assert errors[0].code is ErrorCode.REPLAYED_NONCE
    assert store.counts().escalations == 20


def test_device_cache_expires_and_invalidates(store: Store) -> None:
    device_id = _enrolled(store)
    now = [0.0]
    cache = DeviceCache(store, ttl_s=2.0, clock=lambda: now[0])
    assert cache.cached(device_id) is None
    device = cache.get(device_id)
    assert device is not None
    assert device.status == "active"
    store.set_device_status(device_id, "revoked", reason="lost")
    assert cache.cached(device_id) == device  # still the cached copy within the TTL
    now[0] = 2.5
    assert cache.cached(device_id) is None
    refreshed = cache.get(device_id)
    assert refreshed is not None
    assert refreshed.status == "revoked"
    assert cache.cached(device_id) is None  # devices that are not active are never cached
    store.set_device_status(device_id, "active", reason="found")
    assert cache.get(device_id) is not None
    cache.invalidate(device_id)
    assert cache.cached(device_id) is None
    assert cache.get(uuid.uuid4()) is None  # unknown devices are never cached
