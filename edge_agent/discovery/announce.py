"""The agent announces itself: ``_escalade-agent._tcp.local.`` with its profile and state.

So that an operator sees the devices on the LAN (`cloud-hub lan-devices`), enrolled or not.
An enrolled agent is named by its device id; one not enrolled yet by its key's fingerprint
(the first 16 bytes of SHA-256 over its Ed25519 public key, in hex), which the operator can
match with what `edge-agent enroll` later sends. Nothing secret is announced.
"""

from __future__ import annotations

import hashlib
import logging

import zeroconf
from zeroconf.asyncio import AsyncZeroconf

from edge_agent.discovery.mdns import (
    InterfaceError,
    MdnsSettings,
    interface_addresses,
    register,
    service_info,
    software_version,
)
from edge_agent.discovery.txt import AGENT_SERVICE, AgentAdvert, TxtError

log = logging.getLogger("edge_agent.discovery")


def key_fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:32]


def agent_advert(*, device_id: str | None, public_key: bytes, profile: str) -> AgentAdvert:
    return AgentAdvert(
        txtvers="1",
        id=device_id or key_fingerprint(public_key),
        prof=profile[:64],
        enr="1" if device_id else "0",
        ver=software_version()[:32],
    )


async def announce(
    zc: AsyncZeroconf, settings: MdnsSettings, advert: AgentAdvert, port: int
) -> bool:
    """Register the agent's announcement; False (logged) when it cannot be."""
    try:
        info = service_info(
            AGENT_SERVICE,
            f"escalade-agent-{advert.id[:12]}",
            port=port,
            txt=advert.txt(),
            addresses=interface_addresses(settings.interfaces, ipv6=settings.ipv6),
        )
        await register(zc, info)
    except (OSError, InterfaceError, TxtError, zeroconf.Error) as exc:
        log.warning("not announcing this agent on the LAN: %s", exc)
        return False
    log.info("announcing %s (profile %s, enrolled %s)", info.name, advert.prof, advert.enr)
    return True
