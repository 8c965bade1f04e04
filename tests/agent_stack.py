"""A real hub and a real agent as child processes, for the agent's end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from escalade.procs import Service, enroll_agent, migrate_hub, module_command, service
from escalade_protocol.messages import AgentHealth, InferRequest, InferResponse

SIMULATED = "--allow-simulated-tee"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hub_argv(hub_dir: Path, bundle_dir: Path, port: int, *extra: str) -> list[str]:
    return module_command(
        "cloud_hub.cli",
        "serve",
        "--data-dir",
        str(hub_dir),
        "--models",
        str(bundle_dir),
        "--port",
        str(port),
        "--ready",
        SIMULATED,
        *extra,
    )


def agent_argv(config: Path) -> list[str]:
    return module_command("edge_agent.cli", "run", "--config", str(config), "--ready")


def write_config(path: Path, *, data_dir: Path, bundle_dir: Path, extra: str = "") -> Path:
    path.write_text(
        f'data_dir = "{data_dir}"\nmodels_dir = "{bundle_dir}"\nport = 0\n'
        f"allow_simulated_tee = true\n{extra}\n"
    )
    return path


@contextlib.asynccontextmanager
async def enrolled(
    tmp_path: Path, bundle_dir: Path, port: int, *hub_args: str
) -> AsyncIterator[Service]:
    """A hub on `port` (with `hub_args`) with the agent in tmp_path/agent enrolled; yields the
    running hub."""
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    if not (hub_dir / "hub.db").exists():
        await migrate_hub(hub_dir)
    argv = hub_argv(hub_dir, bundle_dir, port, *hub_args)
    async with service("hub", argv, log_dir=tmp_path) as hub:
        if not (agent_dir / "device.json").exists():
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        yield hub


async def infer(
    http: aiohttp.ClientSession, url: str, features: list[float], route: str = "auto"
) -> InferResponse:
    body = InferRequest(input=features, route=route).model_dump_json()  # type: ignore[arg-type]
    async with http.post(
        url + "/v1/infer", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        raw = await response.read()
        assert response.status == 200, raw
    return InferResponse.model_validate_json(raw)


async def health(http: aiohttp.ClientSession, url: str) -> AgentHealth:
    async with http.get(url + "/v1/health") as response:
        return AgentHealth.model_validate_json(await response.read())


async def until(condition: object, *, timeout_s: float = 30.0, what: str = "") -> None:
    """Poll an async predicate about another process until it holds, within a deadline.

    The state lives in a child process (its outbox, the hub's database): there is no event to
    await across the process boundary, so this polls; it never waits a fixed time.
    """
    assert callable(condition)
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 (state of another process, see above)
            await asyncio.sleep(0.02)


def ids(responses: list[InferResponse]) -> set[uuid.UUID]:
    out = {r.record_id for r in responses}
    assert None not in out
    return {i for i in out if i is not None}
