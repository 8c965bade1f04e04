"""The outbox (real SQLite), the device-report wire format, the hub's report endpoint (real
aiohttp server, real SQLite), and micro-batching (real ONNX Runtime sessions)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from cloud_hub.device_reports import add_device_report_routes
from cloud_hub.device_reports.queries import count_outcomes
from cloud_hub.identity import HubIdentity
from cloud_hub.store import Device, Store, sqlite_url
from edge_agent.batcher import MicroBatcher
from edge_agent.outbox import Outbox
from edge_agent.profile import load_profile
from edge_agent.runtime import EdgeRuntime
from escalade_protocol.device_reports import (
    REPORT_CONTENT_TYPE,
    DeviceReport,
    OutcomePath,
    OutcomeRecord,
    ReportAck,
    read_report,
    verify_ack,
)
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.http import error_middleware
from escalade_protocol.keys import Ed25519PrivateKey, public_bytes


def record(i: int = 0, **changes: object) -> OutcomeRecord:
    fields: dict[str, object] = {
        "record_id": uuid.uuid4(),
        "at_ms": 1_700_000_000_000 + i,
        "model_id": "digits-pca32",
        "model_version": 1,
        "path": OutcomePath.ESCALATED,
        "reason": "uncertain",
        "local_label": 3,
        "hub_label": 5,
        "signal": 0.42,
        "latency_us": 900,
        "hub_latency_us": 700,
        "hub_error": "",
    }
    fields.update(changes)
    return OutcomeRecord(**fields)  # type: ignore[arg-type]


@given(
    st.sampled_from(list(OutcomePath)),
    st.one_of(st.none(), st.integers(0, 0xFFFE)),
    st.floats(allow_nan=False),
    st.one_of(st.none(), st.integers(0, 0xFFFFFFFE)),
    st.text(max_size=30),
)
def test_outcome_records_round_trip(
    path: OutcomePath, hub_label: int | None, signal: float, hub_us: int | None, reason: str
) -> None:
    r = record(path=path, hub_label=hub_label, signal=signal, hub_latency_us=hub_us, reason=reason)
    assert OutcomeRecord.decode(r.encode()) == r


def test_reports_are_signed_and_acks_bound_to_their_report() -> None:
    device, hub = Ed25519PrivateKey.generate(), HubIdentity.generate()
    report = DeviceReport(uuid.uuid4(), 1, bytes(16), hub.key_id, (record(1), record(2)))
    raw = report.sign(device)
    signed = read_report(raw)
    assert signed.verify(device.public_key()) == report
    with pytest.raises(ProtocolError) as caught:
        read_report(raw).verify(Ed25519PrivateKey.generate().public_key())
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    flipped = bytearray(raw)
    flipped[40] ^= 1
    with pytest.raises(ProtocolError):
        read_report(bytes(flipped)).verify(device.public_key())
    with pytest.raises(ProtocolError, match="trailing"):
        read_report(raw + b"\x00")

    ack = ReportAck(hub.key_id, signed.digest, tuple(r.record_id for r in report.items))
    sealed = ack.sign(hub.signing_key)
    assert verify_ack(sealed, hub.signing_key.public_key(), report=raw).known == ack.known
    other = DeviceReport(uuid.uuid4(), 2, bytes(16), hub.key_id, (record(3),)).sign(device)
    with pytest.raises(ProtocolError, match="another report"):
        verify_ack(sealed, hub.signing_key.public_key(), report=other)
    with pytest.raises(ProtocolError) as bad:
        verify_ack(sealed, device.public_key(), report=raw)
    assert bad.value.code is ErrorCode.BAD_SIGNATURE


def test_outbox_cap_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "state" / "outbox.sqlite3", max_records=5)
    try:
        assert (tmp_path / "state" / "outbox.sqlite3").stat().st_mode & 0o777 == 0o600
        records = [record(i) for i in range(8)]
        outbox.add_many(records[:3])
        outbox.add_many(records[3:])
        assert outbox.depth == 5
        assert outbox.dropped == 3
        assert [r.record_id for r in outbox.oldest(10)] == [r.record_id for r in records[3:]]
        outbox.add_many(records[7:])  # already held: not added twice
        assert outbox.depth == 5
        assert outbox.remove([records[3].record_id, uuid.uuid4()]) == 1
        assert outbox.depth == 4
    finally:
        outbox.close()
    reopened = Outbox(tmp_path / "state" / "outbox.sqlite3", max_records=5)
    try:
        assert (reopened.depth, reopened.dropped) == (4, 3)
    finally:
        reopened.close()


async def test_concurrent_adds_share_one_commit_and_all_land(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        await asyncio.gather(*(outbox.add(record(i)) for i in range(50)))
        assert outbox.depth == 50
        assert outbox.added.is_set()
    finally:
        outbox.close()


async def test_hub_endpoint_stores_once_acks_and_refuses_inactive_devices(
    tmp_path: Path,
) -> None:
    store = Store.open(sqlite_url(tmp_path), migrate=True)  # the hub's schema, migrated
    engine = store.engine
    hub = HubIdentity.generate()
    key = Ed25519PrivateKey.generate()
    device = Device(
        uuid.uuid4(), public_bytes(key.public_key()), "x86-64-cpu", "active", datetime.now(UTC)
    )
    devices = {device.device_id: device}

    async def get_device(device_id: uuid.UUID) -> Device | None:
        return devices.get(device_id)

    app = web.Application(middlewares=[error_middleware])
    add_device_report_routes(app, engine=engine, identity=hub, get_device=get_device)
    items = (record(1), record(2), record(3))
    async with TestClient(TestServer(app)) as client:

        async def post(report: DeviceReport, signer: Ed25519PrivateKey = key) -> tuple[int, bytes]:
            raw = report.sign(signer)
            response = await client.post(
                "/v1/device-reports", data=raw, headers={"Content-Type": REPORT_CONTENT_TYPE}
            )
            body = await response.read()
            if response.status == 200:
                ack = verify_ack(body, hub.signing_key.public_key(), report=raw)
                return 200, b"".join(i.bytes for i in sorted(ack.known))
            return response.status, body

        report = DeviceReport(device.device_id, 1, bytes(16), hub.key_id, items)
        expected = b"".join(i.bytes for i in sorted(r.record_id for r in items))
        assert await post(report) == (200, expected)
        # At least once: the same records again are acked, not stored twice.
        assert await post(report) == (200, expected)
        assert count_outcomes(engine, device.device_id) == 3

        status, body = await post(report, Ed25519PrivateKey.generate())
        assert (status, b"bad_signature" in body) == (401, True)
        stale = DeviceReport(device.device_id, 1, bytes(16), HubIdentity.generate().key_id, items)
        status, body = await post(stale)
        assert (status, b"unknown_hub_key" in body) == (409, True)
        devices[device.device_id] = Device(
            device.device_id, device.public_key, device.profile, "quarantined", device.enrolled_at
        )
        fresh = DeviceReport(device.device_id, 2, bytes(16), hub.key_id, (record(4),))
        status, body = await post(fresh)
        assert (status, b"device_quarantined" in body) == (403, True)
        unknown = DeviceReport(uuid.uuid4(), 2, bytes(16), hub.key_id, (record(5),))
        status, body = await post(unknown)
        assert (status, b"unknown_device" in body) == (401, True)
    assert count_outcomes(engine) == 3
    engine.dispose()


async def test_micro_batching_runs_fewer_sessions_than_requests(bundle_dir: Path) -> None:
    runtime = EdgeRuntime(bundle_dir, load_profile("x86-64-cpu"))
    with np.load(bundle_dir / "test.npz") as data:
        X = np.asarray(data["X"][:16], dtype=np.float32)
    single = [runtime.infer(x) for x in X]
    runtime.batches = 0
    batcher = MicroBatcher(runtime, max_batch=16, max_wait_s=0.0005)
    results = await asyncio.gather(*(batcher.infer(x) for x in X))
    assert runtime.batches < len(X)
    for got, want in zip(results, single, strict=True):
        # Each request gets its own row back, in order.
        assert np.allclose(got.probabilities, want.probabilities, atol=1e-5)
    runtime.batches = 0
    unbatched = MicroBatcher(runtime, max_batch=1, max_wait_s=0.0)
    await asyncio.gather(*(unbatched.infer(x) for x in X))
    assert runtime.batches == len(X)
