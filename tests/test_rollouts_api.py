"""Bundles and rollouts through the admin API, over real loopback HTTP against a real hub and
database (SQLite, and PostgreSQL when configured); the pure assignment core."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_stack import Admin, error_of, serve_admin
from enrollment import enroll_request
from hypothesis import given
from hypothesis import strategies as st

from cloud_hub.admin.rollout_models import (
    BundleOut,
    DeviceModelOut,
    RolloutDetail,
    RolloutList,
    RolloutOut,
)
from cloud_hub.admin.routes import PREFIX
from cloud_hub.cli import main as hub_main
from cloud_hub.config import HubConfig
from cloud_hub.device_reports.queries import store_outcomes
from cloud_hub.rollouts import BUCKETS, Rollout, RolloutState, assignment, bucket, covers
from cloud_hub.rollouts.auto import Verdict
from cloud_hub.rollouts.autopilot import autopilot_pass
from cloud_hub.store import migrate_database
from cloud_hub.store import rollouts as table
from escalade_protocol.bundles import SIGNATURE_NAME, sign_bundle
from escalade_protocol.device_reports import BundleState, ModelStatus, OutcomePath, OutcomeRecord
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey, public_bytes
from escalade_protocol.messages import EnrollResponse

RELEASE = Ed25519PrivateKey.generate()


def tar_of(bundle: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(bundle, arcname=".")
    return out.getvalue()


@pytest.fixture(name="signed")
def signed_fixture(bundle_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "signed"
    shutil.copytree(bundle_dir, out)
    sign_bundle(out, RELEASE)
    return out


@pytest.fixture(name="admin")
async def pinned_admin(database_url: str, bundle_dir: Path, tmp_path: Path) -> AsyncIterator[Admin]:
    """A hub whose config pins RELEASE as its release key."""
    migrate_database(database_url)
    config = HubConfig(
        data_dir=tmp_path / "hub",
        models_dir=bundle_dir,
        database_url=database_url,
        allow_simulated_tee=True,
        release_keys=(public_bytes(RELEASE.public_key()).hex(),),
    )
    async with serve_admin(config) as admin:
        yield admin


async def upload(admin: Admin, body: bytes, token: str | None = None) -> tuple[int, bytes]:
    headers = {
        "Authorization": f"Bearer {token or admin.write_token}",
        "Content-Type": "application/x-tar",
    }
    async with admin.http.post(admin.url + PREFIX + "/bundles", data=body, headers=headers) as r:
        return r.status, await r.read()


async def enroll(admin: Admin, token: str, profile: str = "x86-64-cpu") -> uuid.UUID:
    request = enroll_request(token, Ed25519PrivateKey.generate())
    body = request.model_copy(update={"profile": profile}).model_dump_json()
    async with admin.http.post(admin.url + "/v1/enroll", data=body) as response:
        assert response.status == 201
        return EnrollResponse.model_validate_json(await response.read()).device_id


async def fleet(admin: Admin, n: int, profile: str = "x86-64-cpu") -> list[uuid.UUID]:
    status, raw = await admin.call("POST", "/enrollment-tokens", json={"uses": n})
    assert status == 201, raw
    token = json.loads(raw)["token"]
    return [await enroll(admin, token, profile) for _ in range(n)]


async def test_signed_bundle_uploads_once_and_is_downloadable(admin: Admin, signed: Path) -> None:
    """Upload returns the digest and signer; uploading again is the same bundle; its files are
    served by digest, with HTTP Range."""
    status, raw = await upload(admin, tar_of(signed))
    assert status == 201, raw
    bundle = BundleOut.model_validate_json(raw)
    assert bundle.signer is not None
    status, again = await upload(admin, tar_of(signed))
    assert status == 201
    assert BundleOut.model_validate_json(again).digest == bundle.digest
    url = f"{admin.url}/v1/bundles/{bundle.digest}/head.onnx"
    async with admin.http.get(url, headers={"Range": "bytes=10-"}) as response:
        assert response.status == 206
        assert await response.read() == (signed / "head.onnx").read_bytes()[10:]
    async with admin.http.get(f"{admin.url}/v1/bundles/{bundle.digest}/../../hub.db") as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        ("unsigned", ErrorCode.BUNDLE_UNSIGNED),
        ("other_key", ErrorCode.BUNDLE_UNTRUSTED_KEY),
        ("corrupt", ErrorCode.BUNDLE_DIGEST_MISMATCH),
        ("not_tar", ErrorCode.BUNDLE_MALFORMED),
    ],
)
async def test_refused_uploads_leave_nothing(
    admin: Admin, signed: Path, damage: str, code: ErrorCode
) -> None:
    """Each refused upload answers its stable code, and neither the list nor the shelf grows."""
    if damage == "unsigned":
        (signed / SIGNATURE_NAME).unlink()
    elif damage == "other_key":
        sign_bundle(signed, Ed25519PrivateKey.generate())
    elif damage == "corrupt":
        head = signed / "head.onnx"
        data = bytearray(head.read_bytes())
        data[200] ^= 1
        head.write_bytes(bytes(data))
    body = b"garbage" * 100 if damage == "not_tar" else tar_of(signed)
    status, raw = await upload(admin, body)
    assert status == 422
    error_of(status, raw, code)
    status, raw = await admin.call("GET", "/bundles", token="read")
    assert status == 200
    assert b'"items":[]' in raw
    shelf = admin.state.config.data_dir / "bundles"
    assert [p.name for p in shelf.iterdir() if p.name != ".incoming"] == []
    assert list((shelf / ".incoming").iterdir()) == []


async def test_upload_needs_write_scope(admin: Admin, signed: Path) -> None:
    status, raw = await upload(admin, tar_of(signed), token=admin.read_token)
    assert status == 403
    error_of(status, raw, ErrorCode.FORBIDDEN)


async def test_staged_rollout_only_adds_devices_and_rolls_back(admin: Admin, signed: Path) -> None:
    """1% -> 10% -> 100% of 40 devices: each stage keeps the previous stage's devices; a
    rollback leaves every device on its installed bundle; changes are audited."""
    devices = await fleet(admin, 40)
    status, raw = await upload(admin, tar_of(signed))
    digest = BundleOut.model_validate_json(raw).digest
    status, raw = await admin.call(
        "POST", "/rollouts", json={"bundle_digest": digest, "percent": 1}
    )
    assert status == 201, raw
    rollout = RolloutOut.model_validate_json(raw)
    seen: list[set[uuid.UUID]] = []
    for step in (None, None):
        status, raw = await admin.call("GET", f"/rollouts/{rollout.rollout_id}", token="read")
        assert status == 200
        seen.append({d.device_id for d in RolloutDetail.model_validate_json(raw).devices})
        status, raw = await admin.call(
            "POST", f"/rollouts/{rollout.rollout_id}/advance", json={} if step is None else step
        )
        assert status == 200, raw
    status, raw = await admin.call("GET", f"/rollouts/{rollout.rollout_id}", token="read")
    detail = RolloutDetail.model_validate_json(raw)
    assert detail.rollout.percent == 100
    assert {d.device_id for d in detail.devices} == set(devices)
    assert seen[0] <= seen[1] <= set(devices)
    status, raw = await admin.call("POST", f"/rollouts/{rollout.rollout_id}/advance", json={})
    error_of(status, raw, ErrorCode.CONFLICT)
    status, raw = await admin.call("POST", f"/rollouts/{rollout.rollout_id}/rollback", json={})
    assert status == 200, raw
    status, raw = await admin.call("GET", f"/devices/{devices[0]}/model", token="read")
    assert DeviceModelOut.model_validate_json(raw).assigned_digest is None
    status, raw = await admin.call("GET", "/audit", token="read")
    for action in ("bundle_register", "rollout_create", "rollout_advance", "rollout_rollback"):
        assert action.encode() in raw


async def test_rollout_to_named_devices_and_profile(admin: Admin, signed: Path) -> None:
    """Named devices get the bundle, others not; a profile rollout covers only that profile."""
    plain = await fleet(admin, 3)
    pis = await fleet(admin, 2, profile="raspberry-pi-4")
    _, raw = await upload(admin, tar_of(signed))
    digest = BundleOut.model_validate_json(raw).digest
    status, raw = await admin.call(
        "POST", "/rollouts", json={"bundle_digest": digest, "devices": [str(plain[0])]}
    )
    assert status == 201, raw
    status, raw = await admin.call(
        "POST",
        "/rollouts",
        json={"bundle_digest": digest, "percent": 100, "profile": "raspberry-pi-4"},
    )
    assert status == 201, raw
    status, raw = await admin.call("GET", "/rollouts", token="read")
    assert len(RolloutList.model_validate_json(raw).items) == 2
    assigned = {}
    for device in plain + pis:
        _, raw = await admin.call("GET", f"/devices/{device}/model", token="read")
        assigned[device] = DeviceModelOut.model_validate_json(raw).assigned_digest
    assert [assigned[d] for d in plain] == [digest, None, None]
    assert [assigned[d] for d in pis] == [digest, digest]


@pytest.mark.parametrize(
    "body",
    [
        {"bundle_digest": "0" * 64, "percent": 1},
        {"bundle_digest": "a" * 64},
        {"bundle_digest": "a" * 64, "percent": 0},
        {"bundle_digest": "a" * 64, "percent": 1.005},
        {"bundle_digest": "a" * 64, "percent": 5, "devices": [str(uuid.uuid4())]},
    ],
)
async def test_bad_rollouts_refused(admin: Admin, body: dict[str, object]) -> None:
    """An unknown bundle is 404, a malformed target 400; nothing is created."""
    status, raw = await admin.call("POST", "/rollouts", json=body)
    assert status in (400, 404)
    error_of(status, raw, ErrorCode.NOT_FOUND if status == 404 else ErrorCode.BAD_REQUEST)
    _, raw = await admin.call("GET", "/rollouts", token="read")
    assert RolloutList.model_validate_json(raw).items == []


def _rollout(rollout_id: int, percent_bp: int, **extra: object) -> Rollout:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "rollout_id": rollout_id,
        "bundle_digest": f"{rollout_id:064x}",
        "devices": None,
        "profile": None,
        "percent_bp": percent_bp,
        "state": RolloutState.ACTIVE,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(extra)
    return Rollout(**fields)  # type: ignore[arg-type]


@given(st.integers(1, 10**6), st.integers(0, BUCKETS), st.integers(0, BUCKETS))
def test_a_wider_share_only_adds_devices(rollout_id: int, low: int, high: int) -> None:
    """For any rollout and two shares, the smaller share's devices are in the larger's."""
    low, high = sorted((low, high))
    ids = [uuid.UUID(int=i * 7919) for i in range(200)]
    small = {d for d in ids if covers(_rollout(rollout_id, low), d, "p")}
    large = {d for d in ids if covers(_rollout(rollout_id, high), d, "p")}
    assert small <= large


def test_shares_are_close_to_their_percent() -> None:
    """10% of 20 000 devices is 10% within 1 pp; buckets are the same for the same input."""
    ids = [uuid.UUID(int=i) for i in range(20_000)]
    share = sum(1 for d in ids if bucket(3, d) < 1_000) / len(ids)
    assert abs(share - 0.10) < 0.01
    assert bucket(3, ids[5]) == bucket(3, ids[5])
    assert bucket(3, ids[5]) != bucket(4, ids[5]) or bucket(3, ids[6]) != bucket(4, ids[6])


def test_newest_live_rollout_wins() -> None:
    """Two rollouts covering a device: the newer assigns; rolled back: the older again."""
    device = uuid.uuid4()
    old, new = _rollout(1, BUCKETS), _rollout(2, BUCKETS)
    assert assignment([old, new], device, "p") == new
    back = _rollout(2, BUCKETS, state=RolloutState.ROLLED_BACK)
    assert assignment([old, back], device, "p") == old
    assert assignment([], device, "p") is None


def _outcomes(n: int, *, escalated: int, refused: int) -> list[OutcomeRecord]:
    records = []
    for i in range(n):
        path = OutcomePath.ESCALATED if i < escalated else OutcomePath.LOCAL
        error = "embedding_rejected" if i >= n - refused else ""
        records.append(
            OutcomeRecord(
                record_id=uuid.uuid4(),
                at_ms=1,
                model_id="digits-pca32",
                model_version=1,
                path=OutcomePath.DEGRADED if error else path,
                reason="confident",
                local_label=1,
                hub_label=1 if path is OutcomePath.ESCALATED and not error else None,
                signal=0.9,
                latency_us=100,
                hub_error=error,
            )
        )
    return records


def _running(admin: Admin, device: uuid.UUID, digest: str) -> None:
    status = ModelStatus(
        record_id=uuid.uuid4(),
        at_ms=int(datetime.now(UTC).timestamp() * 1000),
        model_id="digits-pca32",
        model_version=1,
        bundle_digest=bytes.fromhex(digest),
        state=BundleState.CURRENT,
    )
    table.record_model_status(admin.state.service.store.engine, device, status)


@pytest.mark.parametrize(
    ("refused", "verdict", "percent"),
    [(0, Verdict.ADVANCE, 10.0), (3, Verdict.PAUSE, 1.0)],
)
async def test_autopilot_advances_within_bounds_and_pauses_outside(
    admin: Admin, signed: Path, refused: int, verdict: Verdict, percent: float
) -> None:
    """Devices running the bundle answer 40 times, 10 escalated: the rollout goes 1% -> 10%;
    with 3 refusals (7.5% > 1%) it is paused instead. Either way the hub audits it."""
    new, old = await fleet(admin, 2)
    _, raw = await upload(admin, tar_of(signed))
    digest = BundleOut.model_validate_json(raw).digest
    auto = {"min_outcomes": 30, "max_error_rate": 0.01, "max_escalation_increase": 0.1}
    status, raw = await admin.call(
        "POST", "/rollouts", json={"bundle_digest": digest, "percent": 1, "auto": auto}
    )
    assert status == 201, raw
    rollout_id = RolloutOut.model_validate_json(raw).rollout_id
    engine = admin.state.service.store.engine
    assert [d.verdict for d in autopilot_pass(engine)] == [Verdict.HOLD]
    _running(admin, new, digest)
    store_outcomes(engine, new, _outcomes(40, escalated=10, refused=refused))
    store_outcomes(engine, old, _outcomes(40, escalated=8, refused=0))
    assert [d.verdict for d in autopilot_pass(engine)] == [verdict]
    _, raw = await admin.call("GET", f"/rollouts/{rollout_id}", token="read")
    rollout = RolloutDetail.model_validate_json(raw).rollout
    assert rollout.percent == percent
    assert rollout.state == ("paused" if verdict is Verdict.PAUSE else "active")
    _, raw = await admin.call("GET", "/audit", token="read")
    assert b"by the autopilot" in raw


async def test_autopilot_pauses_when_a_device_rolled_back(admin: Admin, signed: Path) -> None:
    (device,) = await fleet(admin, 1)
    _, raw = await upload(admin, tar_of(signed))
    digest = BundleOut.model_validate_json(raw).digest
    await admin.call("POST", "/rollouts", json={"bundle_digest": digest, "percent": 1, "auto": {}})
    status = ModelStatus(
        record_id=uuid.uuid4(),
        at_ms=int(datetime.now(UTC).timestamp() * 1000),
        model_id="digits-pca32",
        model_version=1,
        bundle_digest=bytes(32),
        state=BundleState.ROLLED_BACK,
        target_digest=bytes.fromhex(digest),
        code="bundle_warmup_failed",
    )
    table.record_model_status(admin.state.service.store.engine, device, status)
    (decision,) = autopilot_pass(admin.state.service.store.engine)
    assert decision.verdict is Verdict.PAUSE
    assert "rolled back" in decision.reason


async def test_cli_creates_an_auto_rollout_and_refuses_an_unknown_bundle(
    admin: Admin, signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cloud-hub admin rollouts create --auto` over HTTP; an unknown digest: exit 2, one line."""
    _, raw = await upload(admin, tar_of(signed))
    digest = BundleOut.model_validate_json(raw).digest
    common = ["--hub", admin.url, "--token", admin.write_token]
    argv = ["admin", "rollouts", "create", "--bundle", digest, "--percent", "1", "--auto"]
    assert await asyncio.to_thread(hub_main, [*argv, *common, "--json"]) == 0
    created = RolloutOut.model_validate_json(capsys.readouterr().out)
    assert created.auto is not None
    assert created.auto.min_outcomes == 200
    argv[4] = "0" * 64
    assert await asyncio.to_thread(hub_main, [*argv, *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "404 not_found" in err[0]
