"""The hub announces itself on the LAN: ``_escalade-hub._tcp.local.`` over mDNS / DNS-SD.

`hub_txt` (pure) builds the TXT record (RFC 6763 section 6): ``txtvers``, ``id``, ``api``,
``tee``, ``kfp`` (the hub key id that the attestation bundle carries and the evidence binds)
and ``ver``; nothing secret. `HubAdvertiser` (shell) owns the process's one `AsyncZeroconf`:
opened with the app, the service registered once the socket listens (the port may be 0 until
then), unregistered (goodbye packets) at shutdown. Advertising is a convenience, never a
dependency: every failure is logged and the hub serves on.

The hub imports nothing from `edge_agent` (the enclave trusts only the hub's own packages,
`cloud_hub.enclave.manifest`); the agent's reader of this record is
`edge_agent/discovery/txt.py`, and `tests/test_discovery.py` checks that the two agree.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass

import ifaddr
import zeroconf
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger("cloud_hub.advertise")

HUB_SERVICE = "_escalade-hub._tcp.local."
_TXT_KEY = re.compile(r"^[\x21-\x3c\x3e-\x7e]{1,9}$")  # RFC 6763 6.4: printable ASCII, no '='
_TXT_ITEM_MAX = 255


class AdvertiseError(ValueError):
    """The announcement cannot be made as configured (a limit, an interface, loopback)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseSettings:
    host: str
    # Interface names to announce on (empty: the system's default one); IPv6 besides IPv4.
    interfaces: tuple[str, ...] = ()
    ipv6: bool = False
    # The instance name; default: "escalade-hub-<host name>-<key id prefix>".
    instance: str | None = None


def hub_txt(*, instance: str, tee: str, key_id: bytes, version: str) -> dict[str, str]:
    """The hub's TXT items; raises `AdvertiseError` past RFC 6763's limits."""
    items = {
        "txtvers": "1",
        "id": instance[:63],
        "api": "/v1",
        "tee": tee,
        "kfp": key_id.hex(),
        "ver": version[:32],
    }
    for key, value in items.items():
        if not _TXT_KEY.match(key) or len(f"{key}={value}".encode()) > _TXT_ITEM_MAX:
            raise AdvertiseError(f"TXT item {key}= breaks RFC 6763's limits")
    return items


def announced_addresses(settings: AdvertiseSettings) -> list[str]:
    """A specific listen address is announced as it is; a wildcard, as the interfaces' own."""
    try:
        ip = ipaddress.ip_address(settings.host)
    except ValueError:
        ip = None  # a host name: announce the interfaces' addresses
    if ip is not None and ip.is_loopback:
        raise AdvertiseError(
            f"the hub listens on {settings.host} only: nobody on the LAN can reach it"
        )
    if ip is not None and not ip.is_unspecified:
        return [settings.host]
    adapters = {a.nice_name: a for a in ifaddr.get_adapters()}
    unknown = sorted(set(settings.interfaces) - set(adapters))
    if unknown:
        raise AdvertiseError(f"no network interface {', '.join(unknown)}")
    found = []
    for name in settings.interfaces or tuple(adapters):
        for entry in adapters[name].ips:
            text = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
            ip = ipaddress.ip_address(text)
            if not (ip.is_loopback or ip.is_link_local) and (ip.version == 4 or settings.ipv6):
                found.append(text)
    if not found:
        raise AdvertiseError("no address to announce on the chosen interfaces")
    return found


def _version() -> str:
    try:
        return importlib.metadata.version("escalade")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class HubAdvertiser:
    def __init__(self, settings: AdvertiseSettings, *, tee: str, key_id: bytes) -> None:
        self._settings = settings
        self._tee = tee
        self._key_id = key_id
        self._zc: AsyncZeroconf | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        s = self._settings
        try:
            addresses = announced_addresses(s)
            # zeroconf takes interface addresses, not names (and IPv6 ones in another form:
            # with IPv6 on, all interfaces, the announced addresses still chosen as above).
            interfaces: InterfaceChoice | list[str] = InterfaceChoice.Default
            if s.ipv6:
                interfaces = InterfaceChoice.All
            elif s.interfaces:
                interfaces = addresses
            version = IPVersion.All if s.ipv6 else IPVersion.V4Only
            self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=version)
        except (OSError, AdvertiseError) as exc:
            log.warning("not advertising on the LAN: %s", exc)

    def listening(self, port: int) -> None:
        """The socket is bound: announce the hub (in the background; probing takes ~1 s)."""
        if self._zc is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._register(self._zc, port))

    async def _register(self, zc: AsyncZeroconf, port: int) -> None:
        s = self._settings
        label = (s.instance or self.default_instance()).replace(".", "-")[:63]
        try:
            txt = hub_txt(instance=label, tee=self._tee, key_id=self._key_id, version=_version())
            addresses = announced_addresses(s)
            info = AsyncServiceInfo(
                HUB_SERVICE,
                f"{label}.{HUB_SERVICE}",
                port=port,
                properties=txt,
                # Its own host name: other processes on this machine announce theirs.
                server=f"{label}.local.",
                parsed_addresses=addresses,
            )
            # Probes for a unique name first (about a second) and renames on a clash.
            await (await zc.async_register_service(info, allow_name_change=True))
        except (OSError, AdvertiseError, zeroconf.Error) as exc:
            log.warning("not advertising on the LAN: %s", exc)
            return
        log.info(
            "advertising %s on %s port %d (kfp %s)",
            info.name,
            ", ".join(addresses),
            port,
            txt["kfp"],
        )

    def default_instance(self) -> str:
        return f"escalade-hub-{socket.gethostname().split('.')[0]}-{self._key_id.hex()[:8]}"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._zc is not None:
            # Unregistering sends goodbye packets: agents drop this hub at once.
            await self._zc.async_close()
