"""The agent as a device service: background tasks, systemd notification, the unit file.

`run_background(state)` attests the hub at start (or marks the agent degraded), marks it ready,
then keeps two tasks running until shutdown: a hub watch that re-attests when the appraisal ages
out and probes a hub that failed (so the agent notices the hub is back without waiting for a
request), and the outbox deliverer. A task that fails is logged and restarted.

`notify("READY=1")` speaks systemd's sd_notify protocol on ``$NOTIFY_SOCKET`` (a unit with
``Type=notify``); `render_unit` writes the hardened unit that `edge-agent install-service`
installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle_update import start_bundle_updates
from edge_agent.errors import HubUnavailable
from edge_agent.hub_pool import HubPool
from edge_agent.outbox import deliver_forever
from edge_agent.replica_follow import follow_replicas

if TYPE_CHECKING:
    from edge_agent.api import AgentState

log = logging.getLogger("edge_agent.service")
# How often a healthy hub's attestation is looked at (re-attested once older than the TTL).
WATCH_PERIOD_S = 30.0


def notify(message: str, *, env: dict[str, str] | None = None) -> bool:
    """Send `message` to systemd (``$NOTIFY_SOCKET``); False when not run by systemd."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


async def _supervise(name: str, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    while True:
        try:
            await make()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; restarting it", name)
            await asyncio.sleep(1.0)


async def watch_hub(state: AgentState) -> None:
    client = state.client
    assert client is not None

    async def pause(seconds: float) -> None:
        # A pool wakes early when discovery finds or loses a hub: attest a new one at once.
        if isinstance(client, HubPool):
            await client.wait_changed(seconds)
        else:
            await asyncio.sleep(seconds)

    while True:
        try:
            if client.healthy:
                await client.ensure_attested()
            else:
                await client.probe()
        except HubUnavailable:
            # Logged by the client once per kind of failure; probe again when the breaker says
            # (or, with no hub found yet, when discovery finds one).
            idle = isinstance(client, HubPool) and client.current_url is None
            await pause(WATCH_PERIOD_S if idle else max(client.retry_in(), 0.05))
            continue
        if client.healthy:
            await pause(min(WATCH_PERIOD_S, state.config.attestation_ttl_s / 2))
        else:
            # One of several hubs is down: probe it when its breaker allows.
            await pause(max(client.retry_in(), 0.05))


@contextlib.asynccontextmanager
async def run_background(state: AgentState) -> AsyncIterator[None]:
    client = state.client
    assert client is not None
    try:
        await client.ensure_attested()
    except HubUnavailable as exc:
        log.warning("starting degraded: %s", exc)
    state.ready = True
    tasks = [
        asyncio.create_task(_supervise("hub-watch", lambda: watch_hub(state))),
        asyncio.create_task(
            _supervise(
                "outbox",
                lambda: deliver_forever(
                    state.outbox,
                    client,
                    device=state.identity,
                    batch=state.config.outbox_batch,
                    retry_s=state.config.outbox_retry_s,
                ),
            )
        ),
    ]
    period = state.config.replica_refresh_s
    if isinstance(client, HubPool) and period > 0:
        tasks.append(
            asyncio.create_task(
                _supervise("replicas", lambda: follow_replicas(client, period_s=period))
            )
        )
    audits = state.audits
    if audits is not None:
        tasks.append(asyncio.create_task(_supervise("audit-purge", audits.purge_forever)))
    updater = start_bundle_updates(state)
    if updater is not None:
        tasks.append(asyncio.create_task(_supervise("bundles", updater.run_forever)))
    try:
        yield
    finally:
        log.info("agent shutting down (%d outcome records wait in the outbox)", state.outbox.depth)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if updater is not None:
            await updater.close()
        if audits is not None:
            await audits.close()


UNIT_TEMPLATE = """\
# Escalade edge agent, written by `edge-agent install-service`.
[Unit]
Description=Escalade edge agent (local inference, attested escalation)
Documentation=file://{docs}
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
User={user}
Group={user}
ExecStart={exec_start} run --config {config}
Restart=on-failure
RestartSec=2
TimeoutStartSec=120
StateDirectory={state_dir}
StateDirectoryMode=0700
Environment=ESCALADE_AGENT_DATA_DIR=/var/lib/{state_dir}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices={private_devices}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
ReadOnlyPaths={models_dir}

[Install]
WantedBy=multi-user.target
"""


def render_unit(
    *,
    exec_start: Path,
    config: Path,
    models_dir: Path,
    user: str,
    state_dir: str = "escalade-agent",
    gpu: bool = False,
) -> str:
    """The systemd unit; `gpu` keeps /dev visible (CUDA / TensorRT need /dev/nvidia*)."""
    return UNIT_TEMPLATE.format(
        docs="/usr/share/doc/escalade/install.md",
        user=user,
        exec_start=exec_start,
        config=config,
        state_dir=state_dir,
        models_dir=models_dir,
        private_devices="no" if gpu else "yes",
    )
