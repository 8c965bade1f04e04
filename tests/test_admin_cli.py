"""`cloud-hub admin ...` as an administrator runs it: real CLI processes against a real hub
process, over HTTP only (SQLite, and PostgreSQL when ESCALADE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from enrollment import enroll_request

from cloud_hub.admin import Scope, create_admin_token
from cloud_hub.store import Store, migrate_database
from escalade.procs import Service, hub_command, module_command, service, stop
from escalade_protocol.artifacts import load_manifest
from escalade_protocol.keys import Ed25519PrivateKey
from escalade_protocol.messages import EnrollResponse


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)

    def one_line_error(self, *needles: str) -> str:
        assert self.returncode == 2, self
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("cloud-hub: error: ")
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]


async def cloud_hub(*args: str, env: dict[str, str] | None = None) -> Run:
    process = await asyncio.create_subprocess_exec(
        *module_command("cloud_hub.cli", *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@dataclass
class Hub:
    url: str
    database_url: str
    token_file: Path
    tmp_path: Path
    bundle_dir: Path
    process: Service

    async def admin(self, *args: str, env: dict[str, str] | None = None) -> Run:
        return await cloud_hub(
            "admin", *args, "--hub", self.url, "--token-file", str(self.token_file), env=env
        )


@contextlib.asynccontextmanager
async def hub_process(
    database_url: str, tmp_path: Path, bundle_dir: Path
) -> AsyncIterator[Service]:
    argv = hub_command(
        tmp_path, bundle_dir, "--database-url", database_url, "--allow-simulated-tee"
    )
    async with service("hub", argv, log_dir=tmp_path) as hub:
        yield hub


@pytest.fixture
async def hub(database_url: str, tmp_path: Path, bundle_dir: Path) -> AsyncIterator[Hub]:
    migrate_database(database_url)
    store = Store.open(database_url)
    try:
        token = create_admin_token(store, scopes=frozenset(Scope))
    finally:
        store.close()
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    async with hub_process(database_url, tmp_path, bundle_dir) as process:
        yield Hub(process.url, database_url, token_file, tmp_path, bundle_dir, process)


async def _enroll(hub_url: str, token: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            hub_url + "/v1/enroll",
            data=enroll_request(token, Ed25519PrivateKey.generate()).model_dump_json(),
        ) as response,
    ):
        assert response.status == 201
        return str(EnrollResponse.model_validate_json(await response.read()).device_id)


async def test_an_administrator_runs_a_device_and_the_hub_from_the_cli(hub: Hub) -> None:
    """Token -> enrollment -> approve -> quarantine -> release -> revoke; a model version
    registered; the policy set; the audit chain verified; all of it there after a restart."""
    created = await hub.admin("tokens", "create", "--manual-approval", "--uses", "2", "--json")
    token = created.json()["token"]
    device_id = await _enroll(hub.url, token)

    pending = await hub.admin("devices", "list", "--status", "pending", "--json")
    assert [d["device_id"] for d in pending.json()] == [device_id]
    for action, status in [
        ("approve", "active"),
        ("quarantine", "quarantined"),
        ("release", "active"),
        ("revoke", "revoked"),
    ]:
        run = await hub.admin("devices", action, device_id, "--reason", f"cli {action}")
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"device {device_id} is now {status}"
    (await hub.admin("devices", "approve", device_id)).one_line_error("409 conflict", "revoked")

    manifest = load_manifest(hub.bundle_dir)
    registered = await hub.admin("models", "register", "--bundle", str(hub.bundle_dir), "--json")
    body = registered.json()
    assert (body["model_id"], body["version"]) == (manifest.model_id, manifest.model_version)
    assert manifest.encoder.sha256 in {f["sha256"] for f in body["files"]}
    again = await hub.admin("models", "register", "--bundle", str(hub.bundle_dir))
    again.one_line_error("409 conflict", "already registered")

    policy = await hub.admin("policies", "set", "--reject-score", "1.5", "--hold", "4", "--json")
    assert policy.json()["revision"] == 1
    bad = await hub.admin("policies", "set", "--decision-limit", "99")
    bad.one_line_error("ceiling")
    audits = await hub.admin("policies", "set", "--audit-rate", "0.02", "--json")
    assert audits.json()["policy"]["audit_rate"] == 0.02
    assert audits.json()["policy"]["reject_score"] == 1.5  # the other fields stay
    too_much = await hub.admin("policies", "set", "--audit-rate", "1.5")
    too_much.one_line_error("audit_rate")

    listing = await hub.admin("tokens", "list")
    assert listing.returncode == 0
    assert "manual" in listing.stdout
    stats = await hub.admin("stats", "--by", "device", "--json")
    assert stats.json()["items"] == []
    replicas = await hub.admin("replicas")
    assert replicas.returncode == 0
    assert replicas.stdout.split()[:2] == ["replica", "url"]

    verified = await hub.admin("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("audit chain verifies")
    entries = (await hub.admin("audit", "list", "--device", device_id, "--json")).json()
    actions = [e["action"] for e in entries["items"]]
    assert actions == ["enroll", "approve", "quarantine", "release", "revoke"]

    # A restart of the hub process: everything was in the database.
    await stop(hub.process.process)
    again = hub.tmp_path / "again"
    again.mkdir()
    async with hub_process(hub.database_url, again, hub.bundle_dir) as second:
        restarted = Hub(second.url, hub.database_url, hub.token_file, again, hub.bundle_dir, second)
        device = (await restarted.admin("devices", "get", device_id, "--json")).json()
        assert device["status"] == "revoked"
        models = await restarted.admin("models", "list")
        assert manifest.model_id in models.stdout
        got = (await restarted.admin("policies", "get", "--json")).json()
        assert got["policy"]["reputation"]["hold"] == 4
        report = (await restarted.admin("audit", "verify", "--json")).json()
        assert report["ok"] is True
        # the admin token's creation, token_create, enroll, approve, quarantine, release,
        # revoke, model_register, policy_update (twice: reject score, then audit rate)
        assert report["entries"] == 10


async def test_refusals_are_one_line_with_exit_2(hub: Hub) -> None:
    wrong = await cloud_hub(
        "admin", "devices", "list", "--hub", hub.url, "--token", "esc_adm_wrong"
    )
    wrong.one_line_error("401 unauthorized", "--token")
    hub.token_file.chmod(0o644)
    (await hub.admin("devices", "list")).one_line_error("chmod 600")
    hub.token_file.chmod(0o600)
    (await hub.admin("tokens", "create", "--uses", "0")).one_line_error("uses")
    (await hub.admin("devices", "get", "not-a-device")).one_line_error("not a device id")
    (await hub.admin("models", "get", "nope")).one_line_error("404 not_found")
    gone = await cloud_hub(
        "admin", "replicas", "--hub", "http://127.0.0.1:9", "--token-file", str(hub.token_file)
    )
    gone.one_line_error("hub unreachable at http://127.0.0.1:9")
    nothing = await cloud_hub("admin", "replicas", env={"ESCALADE_HUB_ADMIN_URL": hub.url})
    nothing.one_line_error("no admin token")
    # The environment is enough: hub URL and token.
    ok = await cloud_hub(
        "admin",
        "replicas",
        "--json",
        env={
            "ESCALADE_HUB_ADMIN_URL": hub.url,
            "ESCALADE_ADMIN_TOKEN": hub.token_file.read_text().strip(),
        },
    )
    # The hub registers itself at its first heartbeat (2 s after start): it or nothing yet.
    assert ok.json()["next_cursor"] is None
    assert {item["url"] for item in ok.json()["items"]} <= {hub.url}
