"""Signed bundles rolled out to two real agent processes by a real hub, driven with the
`cloud-hub admin` CLI and curl, while a client keeps calling both agents: they switch with no
failed request; a bundle corrupted on the hub's disk is refused, one whose head fails warm-up
is rolled back, so is one that fails its first real answer, and both keep serving; an
administrator's rollback returns them to the installed bundle."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from agent_stack import agent_argv, free_port, health, hub_argv, infer, until, write_config
from rollout_bundles import nudged_head, signed_copy, static_batch_head, wide_head

from edge_agent.bundle_update.health import WARMUP_ROWS
from escalade.procs import Service, enroll_agent, migrate_hub, module_command, run_step, service
from escalade_protocol.bundles import bundle_digest
from escalade_protocol.keys import Ed25519PrivateKey, public_bytes
from escalade_protocol.messages import AgentHealth

RELEASE = Ed25519PrivateKey.generate()
PUB = public_bytes(RELEASE.public_key()).hex()
pytestmark = pytest.mark.timeout(300)


def digest_of(bundle: Path) -> str:
    return bundle_digest((bundle / "manifest.json").read_bytes())


@dataclass
class Traffic:
    """A client calling every agent in turn until stopped; any failed request is kept."""

    urls: list[str]
    inputs: np.ndarray
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    async def run(self, http: aiohttp.ClientSession) -> None:
        i = 0
        while True:
            for url in self.urls:
                features = [float(v) for v in self.inputs[i % len(self.inputs)]]
                try:
                    # Local answers: the same few inputs escalated again and again would
                    # (rightly) trip the hub's poisoning checks and quarantine the device.
                    await infer(http, url, features, route="local")
                    self.answered += 1
                except (AssertionError, aiohttp.ClientError) as exc:
                    self.failures.append(f"{url}: {exc}")
                i += 1
            await asyncio.sleep(0.005)


@dataclass
class Fleet:
    hub: Service
    hub_dir: Path
    agents: list[Service]
    token: str
    http: aiohttp.ClientSession

    def admin(self, *args: str) -> list[str]:
        return module_command(
            "cloud_hub.cli", "admin", *args, "--hub", self.hub.url, "--token", self.token, "--json"
        )

    async def healths(self) -> list[AgentHealth]:
        return [await health(self.http, a.url) for a in self.agents]

    async def wait_bundle(
        self, state: str, digest: str, code: str = "", assigned: str | None = None
    ) -> None:
        async def all_there() -> bool:
            for h in await self.healths():
                b = h.bundle
                if b is None or b.state != state or b.digest != digest or b.code != code:
                    return False
                if assigned is not None and b.assigned_digest != assigned:
                    return False
            return True

        await until(all_there, timeout_s=60, what=f"agents {state} on {digest[:16]}")

    async def upload(self, bundle: Path) -> str:
        out = await run_step(self.admin("bundles", "upload", str(bundle)), what="upload")
        return str(json.loads(out)["digest"])

    async def curl(self, method: str, path: str, body: object) -> dict[str, object]:
        """What an administrator types: curl against the admin API."""
        out = await _exec(
            "curl", "-sS", "--fail-with-body", "-X", method,
            "-H", f"Authorization: Bearer {self.token}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps(body), f"{self.hub.url}/admin/v1{path}",
        )  # fmt: skip
        answer: dict[str, object] = json.loads(out)
        return answer


@contextlib.asynccontextmanager
async def fleet_of_two(tmp_path: Path, installed: Path) -> AsyncIterator[Fleet]:
    hub_dir = tmp_path / "hub"
    await migrate_hub(hub_dir)
    argv = [*hub_argv(hub_dir, installed, free_port()), "--release-key", PUB]
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(service("hub", argv, log_dir=tmp_path))
        agents = []
        for name in ("agent1", "agent2"):
            agent_dir = tmp_path / name
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
            config = write_config(
                tmp_path / f"{name}.toml",
                data_dir=agent_dir,
                bundle_dir=installed,
                extra=f'release_keys = ["{PUB}"]\nbundle_check_s = 0.2\nbundle_probation = 8',
            )
            agents.append(
                await stack.enter_async_context(service(name, agent_argv(config), log_dir=tmp_path))
            )
        token_out = await run_step(
            module_command(
                "cloud_hub.cli", "create-admin-token", "--data-dir", str(hub_dir), "--json"
            ),
            what="admin token",
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Fleet(hub, hub_dir, agents, json.loads(token_out)["token"], http)


async def test_rollout_to_real_agents_refuses_and_rolls_back_with_no_failed_request(
    bundle_dir: Path, tmp_path: Path
) -> None:
    v1 = signed_copy(bundle_dir, tmp_path / "v1", RELEASE)
    v2 = nudged_head(v1, tmp_path / "v2", RELEASE, scale=1.05)
    v3 = nudged_head(v1, tmp_path / "v3", RELEASE, scale=0.95)
    bad = wide_head(v1, tmp_path / "wide", RELEASE)
    static = static_batch_head(v1, tmp_path / "static", RELEASE, batch=WARMUP_ROWS + 1)
    with np.load(v1 / "test.npz") as data:
        inputs = np.asarray(data["X"][:64], dtype=np.float32)
    async with fleet_of_two(tmp_path, v1) as fleet:
        await fleet.wait_bundle("current", digest_of(v1))
        traffic = Traffic([a.url for a in fleet.agents], inputs)
        client = asyncio.create_task(traffic.run(fleet.http))
        try:
            # Signed v2: uploaded with tar | curl, rolled out to 100% with curl.
            tar = await _exec("tar", "-C", str(v2), "-cf", "-", ".")
            async with fleet.http.post(
                f"{fleet.hub.url}/admin/v1/bundles",
                data=tar,
                headers={
                    "Authorization": f"Bearer {fleet.token}",
                    "Content-Type": "application/x-tar",
                },
            ) as response:
                assert response.status == 201, await response.read()
            first = await fleet.curl(
                "POST", "/rollouts", {"bundle_digest": digest_of(v2), "percent": 100}
            )
            await fleet.wait_bundle("current", digest_of(v2))
            before = traffic.answered
            await until(lambda: _true(traffic.answered > before + 20), what="traffic on v2")

            detail = json.loads(
                await run_step(fleet.admin("rollouts", "get", str(first["rollout_id"])), what="get")
            )
            assert detail["tally"]["assigned"] == 2
            assert detail["tally"]["running"] == 2

            # v3 corrupted on the hub's disk after its checks: both agents refuse it.
            v3_digest = await fleet.upload(v3)
            head = fleet.hub_dir / "bundles" / v3_digest / "head.onnx"
            data = bytearray(head.read_bytes())
            data[len(data) // 2] ^= 0x01
            head.write_bytes(bytes(data))
            ids = ",".join(str(h.device_id) for h in await fleet.healths())
            corrupt = json.loads(
                await run_step(
                    fleet.admin("rollouts", "create", "--bundle", v3_digest, "--devices", ids),
                    what="rollout v3",
                )
            )
            await fleet.wait_bundle("refused", digest_of(v2), code="bundle_digest_mismatch")

            # A head that fails warm-up: loaded, refused by its checks, rolled back.
            bad_digest = await fleet.upload(bad)
            wide = await fleet.curl(
                "POST", "/rollouts", {"bundle_digest": bad_digest, "percent": 100}
            )
            await fleet.wait_bundle("rolled_back", digest_of(v2), code="bundle_warmup_failed")
            port = fleet.agents[0].url.rsplit(":", 1)[1]
            shown = await run_step(
                module_command("edge_agent.cli", "status", "--port", port), what="status"
            )
            assert f"bundle {digest_of(v2)[:16]}" in shown
            assert f"assignment {bad_digest[:16]}: rolled_back; bundle_warmup_failed" in shown
            models = json.loads(await run_step(fleet.admin("rollouts", "devices"), what="devices"))
            assert {m["state"] for m in models["items"]} == {"rolled_back"}
            assert {m["bundle_digest"] for m in models["items"]} == {digest_of(v2)}

            # A head that passes warm-up and fails its first real answer (a fixed batch size):
            # swapped in, then rolled back by the agent, that answer given by the previous one.
            static_digest = await fleet.upload(static)
            probe = await fleet.curl(
                "POST", "/rollouts", {"bundle_digest": static_digest, "percent": 100}
            )
            await fleet.wait_bundle(
                "rolled_back", digest_of(v2), code="bundle_warmup_failed", assigned=static_digest
            )
            for h in await fleet.healths():
                assert h.bundle is not None
                assert h.bundle.assigned_digest == static_digest
                assert h.bundle.detail.startswith("an answer failed")

            # The administrator rolls everything back: the installed bundle again.
            for rollout in (probe, wide, corrupt, first):
                await run_step(
                    fleet.admin("rollouts", "rollback", str(rollout["rollout_id"])),
                    what="rollback",
                )
            await fleet.wait_bundle("current", digest_of(v1))
            before = traffic.answered
            await until(lambda: _true(traffic.answered > before + 20), what="traffic on v1")
        finally:
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client
        assert traffic.failures == []
        assert traffic.answered > 100
        for h in await fleet.healths():
            assert h.bundle is not None
            assert sorted(h.bundle.failed) == sorted([v3_digest, bad_digest, static_digest])


async def _exec(*argv: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (argv[0], out, err)
    return out


async def _true(value: bool) -> bool:
    return value
