"""A real hub process killed with SIGKILL in the middle of a burst: every escalation it answered
is in its database afterwards (an answer leaves only after its record commits)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
from enrollment import enroll_request
from sqlalchemy import select

from attestation import AttestationBundle
from cloud_hub.store import Store, sqlite_url
from cloud_hub.store.schema import escalations
from escalade.procs import hub_command, migrate_hub, module_command, run_step, service
from escalade_protocol import envelope
from escalade_protocol.artifacts import load_manifest
from escalade_protocol.keys import Ed25519PrivateKey, load_x25519_public
from escalade_protocol.messages import EnrollResponse
from escalade_protocol.tensor import Tensor


async def test_kill_9_mid_burst_loses_no_answered_escalation(
    bundle_dir: Path, tmp_path: Path, clean_embedding: npt.NDArray[np.float32]
) -> None:
    hub_dir = tmp_path / "hub"
    manifest = load_manifest(bundle_dir)
    answered: list[bytes] = []
    failed = 0
    await migrate_hub(hub_dir)
    async with (
        service("hub", hub_command(hub_dir, bundle_dir, "--allow-simulated-tee"), log_dir=tmp_path)
        as hub,
        aiohttp.ClientSession() as http,
    ):  # fmt: skip
        token = await run_step(
            module_command(
                "cloud_hub.cli", "tokens", "create", "--data-dir", str(hub_dir), "--quiet"
            ),
            what="token",
        )
        key = Ed25519PrivateKey.generate()
        async with http.post(
            hub.url + "/v1/enroll", data=enroll_request(token.strip(), key).model_dump_json()
        ) as response:
            device_id = EnrollResponse.model_validate_json(await response.read()).device_id
        async with http.post(
            hub.url + "/v1/attestation", data=f'{{"nonce": "{os.urandom(32).hex()}"}}'
        ) as response:
            bundle = AttestationBundle.model_validate_json(await response.read())
        hub_key = load_x25519_public(bundle.encryption_key)

        def sealed(seq: int) -> bytes:
            header = envelope.EnvelopeHeader(
                device_id=device_id,
                model_id=manifest.model_id,
                model_version=manifest.model_version,
                seq=seq,
                timestamp_ms=int(time.time() * 1000),
                nonce=os.urandom(16),
                hub_key_id=bundle.hub_key_id,
            )
            payload = Tensor.from_numpy(clean_embedding, manifest.wire_dtype)
            return envelope.seal(header, payload, device_key=key, hub_key=hub_key)

        bodies = [sealed(i + 1) for i in range(1200)]
        pending = iter(bodies)
        enough = asyncio.Event()

        async def client() -> None:
            nonlocal failed
            for body in pending:
                try:
                    async with http.post(hub.url + "/v1/escalate", data=body) as response:
                        await response.read()
                        if response.status == 200:
                            answered.append(hashlib.sha256(body).digest())
                            if len(answered) == 300:
                                enough.set()
                except aiohttp.ClientError:
                    failed += 1  # in flight when the hub died: never answered

        async def killer() -> None:
            await enough.wait()
            hub.process.send_signal(signal.SIGKILL)

        await asyncio.gather(killer(), *(client() for _ in range(16)))
        await hub.process.wait()
    assert hub.process.returncode == -signal.SIGKILL
    assert 300 <= len(answered) < len(bodies)  # killed mid-burst, not after it
    store = Store.open(sqlite_url(hub_dir))
    try:
        with store.engine.connect() as conn:
            recorded = {bytes(row[0]) for row in conn.execute(select(escalations.c.request_digest))}
    finally:
        store.close()
    missing = [digest for digest in answered if digest not in recorded]
    assert missing == [], f"{len(missing)} answered escalations are not in the database"
