"""The hub over real HTTP on loopback: status codes, error bodies, replay under concurrency,
group commit, and the device cache."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
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
from hubdb import migrated_data_dir

from cloud_hub.app import STATE, HubState, build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.enrollment import create_token, enroll
from cloud_hub.escalation.devices import DeviceCache
from cloud_hub.escalation.recorder import DeviceInactive, EscalationRecorder
from cloud_hub.poisoning import Reputation
from cloud_hub.store import EscalationRecord, Store
from escalade.procs import module_command, run_step
from escalade_protocol import envelope
from escalade_protocol.answer import request_digest, verify_answer
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.hub_keys import HybridKey, load_hub_public
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import (
    EnrollResponse,
    ErrorBody,
)
from escalade_protocol.tensor import Tensor

MLKEM = envelope.HpkeSuiteId.MLKEM768_X25519


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


@contextlib.asynccontextmanager
async def running_hub(config: HubConfig, embedding: npt.NDArray[np.float32]) -> AsyncIterator[Hub]:
    app = make_app(build_state(config))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield Hub(url, app[STATE], http, embedding)
    finally:
        await runner.cleanup()


@pytest.fixture
async def hub(
    bundle_dir: Path, tmp_path: Path, clean_embedding: npt.NDArray[np.float32]
) -> AsyncIterator[Hub]:
    config = HubConfig(
        data_dir=migrated_data_dir(tmp_path),
        models_dir=bundle_dir,
        allow_simulated_tee=True,
        max_body_bytes=64 << 10,
    )
    async with running_hub(config, clean_embedding) as running:
        yield running


async def enroll_device(hub: Hub) -> tuple[uuid.UUID, Ed25519PrivateKey]:
    token, _ = create_token(hub.state.service.store)
    key = Ed25519PrivateKey.generate()
    status, body = await hub.post("/v1/enroll", enroll_request(token, key).model_dump_json())
    assert status == 201
    return EnrollResponse.model_validate_json(body).device_id, key


def sealed_for(hub: Hub, device_id: uuid.UUID, key: Ed25519PrivateKey) -> bytes:
    classical = hub.state.identity.encryption_key.public_key()
    return sealed_in_suite(hub, device_id, key, envelope.HpkeSuiteId.X25519, classical)


async def test_concurrent_copies_of_one_envelope_are_answered_once(hub: Hub) -> None:
    device_id, key = await enroll_device(hub)
    body = sealed_for(hub, device_id, key)
    results = await asyncio.gather(*(hub.post("/v1/escalate", body) for _ in range(8)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 7
    for status, raw in results:
        if status == 409:
            assert ErrorBody.model_validate_json(raw).code is ErrorCode.REPLAYED_NONCE
    assert hub.state.service.store.counts().escalations == 1


def sealed_in_suite(
    hub: Hub,
    device_id: uuid.UUID,
    key: Ed25519PrivateKey,
    suite: envelope.HpkeSuiteId,
    hub_key: envelope.HubPublicKey,
) -> bytes:
    m = hub.state.service.model.manifest
    header = envelope.EnvelopeHeader(
        device_id=device_id,
        model_id=m.model_id,
        model_version=m.model_version,
        seq=1,
        timestamp_ms=int(time.time() * 1000),
        nonce=os.urandom(16),
        hub_key_id=hub.state.identity.key_id,
        suite=suite,
    )
    payload = Tensor.from_numpy(hub.embedding, m.wire_dtype)
    return envelope.seal(header, payload, device_key=key, hub_key=hub_key)


async def test_an_envelope_sealed_with_the_hybrid_post_quantum_suite_is_answered(hub: Hub) -> None:
    device_id, key = await enroll_device(hub)
    offered = {k.suite: k.public_key for k in hub.state.identity.offered}
    hub_key = load_hub_public(MLKEM, offered[MLKEM])
    body = sealed_in_suite(hub, device_id, key, MLKEM, hub_key)
    status, raw = await hub.post("/v1/escalate", body)
    assert status == 200
    signing = hub.state.identity.signing_key.public_key()
    answer = verify_answer(raw, signing, expected_digest=request_digest(body))
    assert answer.probabilities.to_numpy().shape == (hub.state.service.model.manifest.num_classes,)


async def test_a_hybrid_envelope_sealed_to_another_key_is_not_decrypted(hub: Hub) -> None:
    device_id, key = await enroll_device(hub)
    other = HybridKey.generate().hpke_key.public_key()
    status, raw = await hub.post("/v1/escalate", sealed_in_suite(hub, device_id, key, MLKEM, other))
    assert status == 400
    assert ErrorBody.model_validate_json(raw).code is ErrorCode.BAD_CIPHERTEXT
    assert hub.state.service.store.counts().escalations == 0


async def test_a_suite_the_hub_does_not_accept_is_refused_and_not_recorded(
    bundle_dir: Path, tmp_path: Path, clean_embedding: npt.NDArray[np.float32]
) -> None:
    config = HubConfig(
        data_dir=migrated_data_dir(tmp_path),
        models_dir=bundle_dir,
        allow_simulated_tee=True,
        hpke_suites=frozenset({MLKEM}),
    )
    async with running_hub(config, clean_embedding) as pq_only:
        device_id, key = await enroll_device(pq_only)
        classical = pq_only.state.identity.encryption_key.public_key()
        body = sealed_in_suite(pq_only, device_id, key, envelope.HpkeSuiteId.X25519, classical)
        status, raw = await pq_only.post("/v1/escalate", body)
        assert status == 400
        assert ErrorBody.model_validate_json(raw).code is ErrorCode.UNSUPPORTED_SUITE
        assert pq_only.state.service.store.counts().escalations == 0


async def test_many_devices_in_flight_are_all_recorded(hub: Hub) -> None:
    devices = [await enroll_device(hub) for _ in range(4)]
    bodies = [sealed_for(hub, d, k) for d, k in devices for _ in range(10)]
    results = await asyncio.gather(*(hub.post("/v1/escalate", b) for b in bodies))
    assert all(status == 200 for status, _ in results)
    assert hub.state.service.store.counts().escalations == 40


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
    before = hub.state.service.store.counts()
    got_status, raw = await hub.post(path, data)
    assert got_status == status
    error = ErrorBody.model_validate_json(raw)
    assert error.code is code
    assert "Traceback" not in error.message
    assert hub.state.service.store.counts() == before


@pytest.mark.parametrize(
    "profile",
    [
        "x\n2099-01-01 00:00:00,000 WARNING cloud_hub: forged line",
        "X86-64-CPU",
        "has space",
        "-leading-dash",
        "",
        "a" * 65,
    ],
)
async def test_a_profile_that_is_not_a_profile_name_is_refused(hub: Hub, profile: str) -> None:
    """The profile picks the device's cohort and is logged: free text (a forged log line) is
    refused at the wire model, before the token is spent."""
    token, _ = create_token(hub.state.service.store)
    body = json.loads(enroll_request(token, Ed25519PrivateKey.generate()).model_dump_json())
    status, raw = await hub.post("/v1/enroll", json.dumps(body | {"profile": profile}))
    assert status == 400
    assert ErrorBody.model_validate_json(raw).code is ErrorCode.BAD_REQUEST
    counts = hub.state.service.store.counts()
    assert (counts.tokens_used, counts.devices) == (0, 0)


async def test_unknown_route_is_a_json_404(hub: Hub) -> None:
    async with hub.http.get(hub.url + "/v1/nope") as response:
        assert response.status == 404
        assert ErrorBody.model_validate_json(await response.read()).code is ErrorCode.NOT_FOUND
    async with hub.http.get(hub.url + "/v1/escalate") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        error = ErrorBody.model_validate_json(await response.read())
        assert error.code is ErrorCode.METHOD_NOT_ALLOWED


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
    cache = DeviceCache(ttl_s=2.0, inactive_ttl_s=0.25, clock=lambda: now[0])
    assert cache.cached(device_id) is None
    device = store.get_device(device_id)
    assert device is not None
    cache.put(device)
    cached = cache.cached(device_id)
    assert cached is not None
    assert cached.device == device
    now[0] = 2.5
    assert cache.cached(device_id) is None
    store.set_device_status(device_id, "revoked", reason="lost")
    cache.put(store.get_device(device_id))
    revoked = cache.cached(device_id)
    assert revoked is not None
    assert revoked.device.status == "revoked"
    assert revoked.verify_key is None  # refused before any signature check
    now[0] = 2.8  # ...and only briefly: a release applies within the inactive TTL
    assert cache.cached(device_id) is None
    store.set_device_status(device_id, "active", reason="found")
    cache.put(store.get_device(device_id))
    assert cache.cached(device_id) is not None
    cache.invalidate(device_id)
    assert cache.cached(device_id) is None
    cache.put(None)  # unknown devices are never cached


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "writer-thread"])
async def test_a_revoked_device_is_refused_at_commit_whatever_is_cached(
    store: Store, on_loop: bool
) -> None:
    """The record insert itself checks that the device is active: a revocation committed by
    another process applies to the next commit, with no cache to wait out."""
    device_id = _enrolled(store)
    other = _enrolled(store)
    recorder = EscalationRecorder(store, on_loop=on_loop)
    try:
        await recorder.record(_record(device_id, os.urandom(16)))
        store.set_device_status(device_id, "revoked", reason="stolen")
        results = await asyncio.gather(
            recorder.record(_record(device_id, os.urandom(16))),
            recorder.record(_record(other, os.urandom(16))),
            return_exceptions=True,
        )
    finally:
        recorder.close()
    assert isinstance(results[0], DeviceInactive)
    assert results[1] is None  # the other device's record in the same batch is unaffected
    assert store.counts().escalations == 2


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "writer-thread"])
async def test_a_bad_row_fails_only_its_own_request(store: Store, on_loop: bool) -> None:
    """A row the database refuses (here seq beyond BIGINT, which the pipeline refuses first)
    fails alone: honest records committed in the same group are written."""
    device_id = _enrolled(store)
    honest = _enrolled(store)
    recorder = EscalationRecorder(store, on_loop=on_loop)
    bad = dataclasses.replace(_record(device_id, os.urandom(16)), seq=1 << 63)
    try:
        results = await asyncio.gather(
            recorder.record(bad),
            *(recorder.record(_record(honest, os.urandom(16))) for _ in range(10)),
            return_exceptions=True,
        )
    finally:
        recorder.close()
    assert isinstance(results[0], ProtocolError)
    assert results[0].code is ErrorCode.INTERNAL
    assert results[1:] == [None] * 10
    assert store.counts().escalations == 10


# -- found by an attack run against a live hub ------------------------------------------------


def sealed_with(hub: Hub, device_id: uuid.UUID, key: Ed25519PrivateKey, **header: int) -> bytes:
    m = hub.state.service.model.manifest
    fields: dict[str, object] = {
        "device_id": device_id,
        "model_id": m.model_id,
        "model_version": m.model_version,
        "seq": 1,
        "timestamp_ms": int(time.time() * 1000),
        "nonce": os.urandom(16),
        "hub_key_id": hub.state.identity.key_id,
    }
    fields.update(header)
    payload = Tensor.from_numpy(hub.embedding, m.wire_dtype)
    return envelope.seal(
        envelope.EnvelopeHeader(**fields),  # type: ignore[arg-type]
        payload,
        device_key=key,
        hub_key=hub.state.identity.encryption_key.public_key(),
    )


async def test_a_seq_beyond_the_column_is_refused_and_fails_no_one_else(hub: Hub) -> None:
    """Before: a signed envelope with seq >= 2^63 got 500, and failed the honest requests
    committed in the same group (113 of 150)."""
    evil, evil_key = await enroll_device(hub)
    honest, honest_key = await enroll_device(hub)
    bodies = [sealed_with(hub, evil, evil_key, seq=(1 << 64) - 1)] + [
        sealed_for(hub, honest, honest_key) for _ in range(30)
    ]
    results = await asyncio.gather(*(hub.post("/v1/escalate", b) for b in bodies))
    status, raw = results[0]
    assert status == 400
    assert ErrorBody.model_validate_json(raw).code is ErrorCode.MALFORMED
    assert [s for s, _ in results[1:]] == [200] * 30
    assert hub.state.service.store.counts().escalations == 30


async def test_revocation_applies_to_the_next_escalation(hub: Hub, tmp_path: Path) -> None:
    """Before: after `cloud-hub devices revoke` returned, the hub accepted that device's
    escalations for up to 1.5 s more (the device cache). The revoke runs as the real CLI."""
    device_id, key = await enroll_device(hub)
    status, _ = await hub.post("/v1/escalate", sealed_for(hub, device_id, key))
    assert status == 200  # the device is now cached as active
    await run_step(
        module_command(
            "cloud_hub.cli", "devices", "revoke", str(device_id), "--data-dir", str(tmp_path)
        ),
        what="revoke",
    )
    status, raw = await hub.post("/v1/escalate", sealed_for(hub, device_id, key))
    assert status == 403
    assert ErrorBody.model_validate_json(raw).code is ErrorCode.DEVICE_REVOKED
    assert hub.state.service.store.counts().escalations == 1


async def test_health_answers_at_once_while_another_process_holds_the_write_lock(
    hub: Hub, tmp_path: Path
) -> None:
    """Before: /v1/health took 2.95 s while another process held SQLite's write lock (the
    loop waited in a commit). Now the commit goes to the writer thread; the escalation is
    answered once the lock is released, and health never waits."""
    device_id, key = await enroll_device(hub)
    locker = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        escalation = asyncio.create_task(hub.post("/v1/escalate", sealed_for(hub, device_id, key)))
        await asyncio.sleep(0.3)  # the escalation is now waiting for the lock
        assert not escalation.done()
        started = time.monotonic()
        async with hub.http.get(hub.url + "/v1/health") as response:
            assert response.status == 200
        # Generous: the point is "not the lock's duration", not a speed target.
        assert time.monotonic() - started < 1.0
        locker.execute("COMMIT")
        status, _ = await escalation
        assert status == 200
    finally:
        locker.close()
    assert hub.state.service.store.counts().escalations == 1


async def test_attestation_is_rate_limited_per_client_and_cached_per_nonce(hub: Hub) -> None:
    """Before: every call made the platform produce a quote, for anyone."""
    burst = int(hub.state.config.attestation_burst)
    nonce = os.urandom(32).hex()
    first = await hub.post("/v1/attestation", f'{{"nonce": "{nonce}"}}')
    assert first[0] == 200
    for _ in range(5):  # the same nonce again: the same bundle, and no quote spent
        assert await hub.post("/v1/attestation", f'{{"nonce": "{nonce}"}}') == first
    for _ in range(burst - 1):
        status, _ = await hub.post("/v1/attestation", f'{{"nonce": "{os.urandom(32).hex()}"}}')
        assert status == 200
    async with hub.http.post(
        hub.url + "/v1/attestation", data=f'{{"nonce": "{os.urandom(32).hex()}"}}'
    ) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        error = ErrorBody.model_validate_json(await response.read())
    assert error.code is ErrorCode.RATE_LIMITED


async def test_replay_records_outside_the_window_are_pruned(hub: Hub) -> None:
    """Before: never pruned (21.6 MB over 68,575 escalations). A record older than two
    timestamp windows can never collide with an acceptable envelope again."""
    device_id, key = await enroll_device(hub)
    service = hub.state.service
    window_ms = service.pipeline.policy.timestamp_window_ms
    store = service.store
    now_ms = int(time.time() * 1000)
    old = dataclasses.replace(_record(device_id, os.urandom(16)), sent_at_ms=now_ms - 3 * window_ms)
    recent = dataclasses.replace(_record(device_id, os.urandom(16)), sent_at_ms=now_ms)
    store.record_escalations([old, recent])
    await service.prune_replays()
    assert store.counts().escalations == 1
    # Inside the window the unique key still refuses a second use of a nonce.
    body = sealed_for(hub, device_id, key)
    assert (await hub.post("/v1/escalate", body))[0] == 200
    assert (await hub.post("/v1/escalate", body))[0] == 409


async def test_metrics_export_batch_sizes_and_outcomes(hub: Hub) -> None:
    device_id, key = await enroll_device(hub)
    await asyncio.gather(
        *(hub.post("/v1/escalate", sealed_for(hub, device_id, key)) for _ in range(8))
    )
    await hub.post("/v1/escalate", b"junk")
    async with hub.http.get(hub.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'escalade_hub_escalations_total{outcome="answered"} 8.0' in text
    assert 'escalade_hub_escalations_total{outcome="malformed"} 1.0' in text
    assert "escalade_hub_model_batch_size_count" in text
    assert "escalade_hub_commit_size_sum 8.0" in text


async def test_a_moved_reputation_is_written_behind_the_answer(hub: Hub) -> None:
    """Honest requests never wait for a reputation UPDATE: moved CUSUMs are flushed in bulk."""
    device_id, _ = await enroll_device(hub)
    service = hub.state.service
    device = service.store.get_device(device_id)
    assert device is not None
    service.reputations.remember(device, Reputation(cusum=3.5), persist=True)
    assert service.store.get_device(device_id).cusum == 0.0  # type: ignore[union-attr]
    await service.flush_reputations()
    assert service.store.get_device(device_id).cusum == 3.5  # type: ignore[union-attr]
    await service.flush_reputations()  # nothing pending: nothing written, nothing fails
