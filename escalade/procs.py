"""Running Escalade services as real child processes, for the demo, tests and benchmarks.

A service started with ``--ready`` prints ``READY <url>`` once it listens; `service` waits for
that line (never for a fixed time), and on exit stops the process with SIGTERM, then SIGKILL.
Each child's stderr goes to a log file whose tail is shown if the child fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A child service failed to start or a CLI step failed."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    url: str
    process: asyncio.subprocess.Process
    log_path: Path


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def service(
    name: str, argv: Sequence[str], *, log_dir: Path, ready_timeout_s: float = 60.0
) -> AsyncIterator[Service]:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=_child_env(),
            start_new_session=True,
        )
    try:
        url = await _wait_ready(name, process, log_path, ready_timeout_s)
        yield Service(name, url, process, log_path)
    finally:
        await stop(process)


async def _wait_ready(
    name: str, process: asyncio.subprocess.Process, log_path: Path, timeout_s: float
) -> str:
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                line = await process.stdout.readline()
                if not line:
                    break
                text = line.decode(errors="replace").strip()
                if text.startswith("READY "):
                    return text.removeprefix("READY ").strip()
    except TimeoutError:
        raise ServiceError(
            f"{name} did not become ready in {timeout_s:.0f} s; log:\n{_log_tail(log_path)}"
        ) from None
    await process.wait()
    raise ServiceError(
        f"{name} exited with code {process.returncode} before it was ready; "
        f"log:\n{_log_tail(log_path)}"
    )


async def stop(process: asyncio.subprocess.Process, grace_s: float = 10.0) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def run_step(argv: Sequence[str], *, what: str) -> str:
    """Run a CLI step to completion; return its stdout or raise with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise ServiceError(f"{what} failed (exit {process.returncode}): {err.decode().strip()}")
    return out.decode()


async def migrate_hub(data_dir: Path) -> None:
    """`cloud-hub migrate`: the hub serves only a database an operator created or upgraded."""
    await run_step(
        module_command("cloud_hub.cli", "migrate", "--data-dir", str(data_dir)),
        what="creating the hub database",
    )


def hub_command(data_dir: Path, models: Path, *extra: str) -> list[str]:
    """`cloud-hub serve` on a free loopback port, announcing READY (after `migrate_hub`)."""
    return module_command(
        "cloud_hub.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--models",
        str(models),
        "--port",
        "0",
        "--ready",
        *extra,
    )


def agent_command(data_dir: Path, models: Path, *extra: str) -> list[str]:
    """`edge-agent run` on a free loopback port, announcing READY."""
    return module_command(
        "edge_agent.cli",
        "run",
        "--data-dir",
        str(data_dir),
        "--models",
        str(models),
        "--port",
        "0",
        "--ready",
        *extra,
    )


async def enroll_agent(*, hub_url: str, hub_dir: Path, agent_dir: Path) -> None:
    """The operator's two steps: a one-time token at the hub, then `edge-agent enroll`."""
    token = await run_step(
        module_command("cloud_hub.cli", "tokens", "create", "--data-dir", str(hub_dir), "--quiet"),
        what="creating an enrollment token",
    )
    await run_step(
        module_command(
            "edge_agent.cli",
            "enroll",
            "--hub",
            hub_url,
            f"--token={token.strip()}",
            "--data-dir",
            str(agent_dir),
        ),
        what="enrolling the agent",
    )
