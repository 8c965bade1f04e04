"""A real hub process killed with SIGKILL in the middle of a burst of enrollments and admin
writes: after a restart, every write the hub acknowledged is there and the audit chain
verifies (SQLite, and PostgreSQL when ESCALADE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Coroutine
from pathlib import Path

import aiohttp
from admin_stack import DIGEST, REFERENCE, error_of
from enrollment import enroll_request

from cloud_hub.admin import Scope, create_admin_token
from cloud_hub.admin.fleet_models import ModelDetail, PolicyOut
from cloud_hub.admin.models import ChainReport, DeviceOut, TokenCreated, TokenList
from cloud_hub.store import Store, migrate_database
from escalade.procs import hub_command, service
from escalade_protocol.errors import ErrorCode
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import EnrollResponse

KILL_AFTER = 120


async def test_kill_9_mid_burst_loses_no_acknowledged_admin_write(
    database_url: str, bundle_dir: Path, tmp_path: Path
) -> None:
    migrate_database(database_url)
    store = Store.open(database_url)
    try:
        admin_token = create_admin_token(store, scopes=frozenset(Scope))
    finally:
        store.close()
    auth = {"Authorization": f"Bearer {admin_token}"}
    argv = hub_command(
        tmp_path, bundle_dir, "--database-url", database_url, "--allow-simulated-tee"
    )

    devices: list[uuid.UUID] = []
    approved: list[uuid.UUID] = []
    tokens: list[str] = []
    versions: list[int] = []
    revisions: list[int] = []
    acknowledged = 0
    enough = asyncio.Event()

    def ack() -> None:
        nonlocal acknowledged
        acknowledged += 1
        if acknowledged == KILL_AFTER:
            enough.set()

    async with service("hub", argv, log_dir=tmp_path) as hub, aiohttp.ClientSession() as http:
        admin = hub.url + "/admin/v1"
        async with http.post(
            admin + "/enrollment-tokens",
            json={"uses": 10_000, "auto_approve": False},
            headers=auth,
        ) as response:
            enroll_token = TokenCreated.model_validate_json(await response.read()).token

        async def enroller() -> None:
            while True:
                body = enroll_request(enroll_token, Ed25519PrivateKey.generate())
                async with http.post(hub.url + "/v1/enroll", data=body.model_dump_json()) as r:
                    raw = await r.read()
                if r.status != 201:
                    continue
                device_id = EnrollResponse.model_validate_json(raw).device_id
                devices.append(device_id)
                ack()
                async with http.post(f"{admin}/devices/{device_id}/approve", headers=auth) as r:
                    raw = await r.read()
                if r.status == 200:
                    approved.append(DeviceOut.model_validate_json(raw).device_id)
                    ack()

        async def token_maker() -> None:
            while True:
                async with http.post(
                    admin + "/enrollment-tokens", json={"note": "burst"}, headers=auth
                ) as r:
                    raw = await r.read()
                if r.status == 201:
                    tokens.append(TokenCreated.model_validate_json(raw).token_id)
                    ack()

        async def registrar(start: int) -> None:
            version = start
            while True:
                files = [{"path": "hub.onnx", "sha256": DIGEST, "size": version}]
                body = {"model_id": "burst", "version": version, "files": files,
                        "reference": REFERENCE}  # fmt: skip
                async with http.post(admin + "/models", json=body, headers=auth) as r:
                    await r.read()
                if r.status == 201:
                    versions.append(version)
                    ack()
                version += 2

        async def policy_setter() -> None:
            hold = 1
            while True:
                body = {"reputation": {"hold": hold}}
                async with http.put(admin + "/policy", json=body, headers=auth) as r:
                    raw = await r.read()
                if r.status == 200:
                    revisions.append(PolicyOut.model_validate_json(raw).revision)
                    ack()
                hold = hold % 50 + 1

        async def killer() -> None:
            await enough.wait()
            hub.process.send_signal(signal.SIGKILL)

        workers = [
            *(enroller() for _ in range(4)),
            token_maker(),
            registrar(1),
            registrar(2),
            policy_setter(),
        ]

        async def guarded(work: Coroutine[object, object, None]) -> None:
            # A request in flight when the hub died was never acknowledged.
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                await work

        await asyncio.gather(killer(), *(guarded(w) for w in workers))
        await hub.process.wait()
    assert hub.process.returncode == -signal.SIGKILL
    assert acknowledged >= KILL_AFTER
    for acknowledged_kind in (devices, approved, tokens, versions, revisions):
        assert acknowledged_kind

    again = tmp_path / "restarted"
    again.mkdir()
    argv = hub_command(again, bundle_dir, "--database-url", database_url, "--allow-simulated-tee")
    async with service("hub2", argv, log_dir=again) as hub, aiohttp.ClientSession() as http:
        admin = hub.url + "/admin/v1"

        async def get(path: str) -> bytes:
            async with http.get(admin + path, headers=auth) as r:
                raw = await r.read()
                assert r.status == 200, (path, raw)
                return raw

        for device_id in devices:
            device = DeviceOut.model_validate_json(await get(f"/devices/{device_id}"))
            if device_id in approved:
                assert device.status == "active", device_id
        listed = {
            t.token_id for t in TokenList.model_validate_json(await get("/enrollment-tokens")).items
        }
        assert set(tokens) <= listed
        held = {
            v.version for v in ModelDetail.model_validate_json(await get("/models/burst")).versions
        }
        assert set(versions) <= held
        policy = PolicyOut.model_validate_json(await get("/policy"))
        assert policy.revision >= max(revisions)
        report = ChainReport.model_validate_json(await get("/audit/verify"))
        assert report.ok, report.first_broken
        # An entry per acknowledged write, plus the admin token's and the first enrollment
        # token's.
        assert report.entries >= acknowledged + 2
        async with http.get(admin + "/devices", headers={"Authorization": "Bearer nope"}) as r:
            error_of(r.status, await r.read(), ErrorCode.UNAUTHORIZED)
