"""The hub announces itself on the LAN: ``_escalade-hub._tcp.local.`` over mDNS / DNS-SD.

`hub_advert` (pure) builds the TXT record: ``txtvers``, ``id``, ``api``, ``tee``, ``kfp`` (the
hub key id that the attestation bundle carries and the evidence binds) and ``ver``; nothing
secret. `HubAdvertiser` (shell) owns the process's one `AsyncZeroconf`: opened with the app,
the service registered once the socket listens (the port may be 0 until then), unregistered
(goodbye packets) at shutdown. Advertising is a convenience, never a dependency: every
failure is logged and the hub serves on.

The record format and the mDNS plumbing are shared with the agent (`edge_agent.discovery`),
so that one definition of the wire format serves both ends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass, field

import zeroconf
from zeroconf.asyncio import AsyncZeroconf

from edge_agent.discovery.mdns import (
    InterfaceError,
    MdnsSettings,
    interface_addresses,
    open_zeroconf,
    register,
    service_info,
    software_version,
)
from edge_agent.discovery.txt import API_V1, HUB_SERVICE, HubAdvert, TxtError

log = logging.getLogger("cloud_hub.advertise")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseSettings:
    host: str
    mdns: MdnsSettings = field(default_factory=MdnsSettings)
    # The instance name; default: "escalade-hub-<host name>-<key id prefix>".
    instance: str | None = None


def hub_advert(*, instance: str, tee: str, key_id: bytes, version: str) -> HubAdvert:
    """The hub's TXT record; raises `TxtError` past RFC 6763's limits."""
    advert = HubAdvert(
        txtvers="1", id=instance[:63], api=API_V1, tee=tee, kfp=key_id.hex(), ver=version[:32]
    )
    advert.txt()  # checks the limits now, not at registration
    return advert


def announced_addresses(host: str, mdns: MdnsSettings) -> list[str]:
    """A specific listen address is announced as it is; a wildcard, as the interfaces' own."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None  # a host name: announce the interfaces' addresses
    if ip is not None and not ip.is_unspecified:
        if ip.is_loopback:
            raise InterfaceError(f"the hub listens on {host} only: nobody on the LAN can reach it")
        return [host]
    return interface_addresses(mdns.interfaces, ipv6=mdns.ipv6)


def default_instance(key_id: bytes) -> str:
    return f"escalade-hub-{socket.gethostname().split('.')[0]}-{key_id.hex()[:8]}"


class HubAdvertiser:
    def __init__(self, settings: AdvertiseSettings, *, tee: str, key_id: bytes) -> None:
        self._settings = settings
        self._tee = tee
        self._key_id = key_id
        self._zc: AsyncZeroconf | None = None
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()

    async def open(self) -> None:
        try:
            self._zc = open_zeroconf(self._settings.mdns)
        except (OSError, InterfaceError) as exc:
            log.warning("not advertising on the LAN: cannot open mDNS (%s)", exc)

    def listening(self, port: int) -> None:
        """The socket is bound: announce the hub (in the background; probing takes ~1 s)."""
        if self._zc is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._register(self._zc, port))

    async def _register(self, zc: AsyncZeroconf, port: int) -> None:
        s = self._settings
        instance = s.instance or default_instance(self._key_id)
        try:
            advert = hub_advert(
                instance=instance, tee=self._tee, key_id=self._key_id, version=software_version()
            )
            addresses = announced_addresses(s.host, s.mdns)
            info = service_info(
                HUB_SERVICE, instance, port=port, txt=advert.txt(), addresses=addresses
            )
            await register(zc, info)
        except (OSError, InterfaceError, TxtError, zeroconf.Error) as exc:
            log.warning("not advertising on the LAN: %s", exc)
            return
        log.info(
            "advertising %s on %s port %d (kfp %s)",
            info.name,
            ", ".join(addresses),
            port,
            advert.kfp,
        )
        self.registered.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._zc is not None:
            # Unregistering sends goodbye packets: agents drop this hub at once.
            await self._zc.async_close()
