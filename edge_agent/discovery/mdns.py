"""One `AsyncZeroconf` per process, on the interfaces the configuration names.

`interfaces` are interface names (``eth0``); empty means the system's default interface.
IPv4 only unless `ipv6`. The addresses a service announces are those of the same interfaces
(loopback never: nobody else on the LAN could reach it).
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf


class InterfaceError(ValueError):
    """A named interface does not exist or has no usable address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MdnsSettings:
    interfaces: tuple[str, ...] = ()
    ipv6: bool = False


def _usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, ipv6: bool) -> bool:
    if ip.is_loopback:
        return False
    return ip.version == 4 or (ipv6 and not ip.is_link_local)


def interface_addresses(names: Sequence[str], *, ipv6: bool) -> list[str]:
    """The usable addresses of the named interfaces (all interfaces when `names` is empty)."""
    adapters = {a.nice_name: a for a in ifaddr.get_adapters()}
    missing = [n for n in names if n not in adapters]
    if missing:
        raise InterfaceError(
            f"no network interface {', '.join(missing)} (have: {', '.join(sorted(adapters))})"
        )
    chosen = [adapters[n] for n in names] if names else list(adapters.values())
    out: list[str] = []
    for adapter in chosen:
        for entry in adapter.ips:
            text = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
            if _usable(ipaddress.ip_address(text), ipv6=ipv6):
                out.append(text)
    if names and not out:
        raise InterfaceError(f"interfaces {', '.join(names)} have no usable address")
    return out


def open_zeroconf(settings: MdnsSettings) -> AsyncZeroconf:
    interfaces: InterfaceChoice | list[str] = InterfaceChoice.Default
    if settings.ipv6:
        # zeroconf names IPv6 interfaces otherwise than by address: all of them, then.
        interfaces = InterfaceChoice.All
    elif settings.interfaces:
        # zeroconf takes interface addresses rather than names.
        interfaces = interface_addresses(settings.interfaces, ipv6=False)
    version = IPVersion.All if settings.ipv6 else IPVersion.V4Only
    return AsyncZeroconf(interfaces=interfaces, ip_version=version)


def software_version() -> str:
    """The installed escalade version, for the ``ver`` TXT key."""
    try:
        return importlib.metadata.version("escalade")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def service_info(
    service_type: str, instance: str, *, port: int, txt: dict[str, str], addresses: list[str]
) -> AsyncServiceInfo:
    # DNS labels are at most 63 bytes; the instance name is cut, never refused.
    label = instance.replace(".", "-")[:63]
    return AsyncServiceInfo(
        service_type,
        f"{label}.{service_type}",
        port=port,
        properties=txt,
        # The instance's own host name, not the machine's: another process on this host (or
        # another namespace sharing its name) may announce other addresses for that one.
        server=f"{label}.local.",
        parsed_addresses=addresses,
    )


async def register(zc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
    """Announce `info` (probing for a unique name first, renaming on a clash)."""
    await (await zc.async_register_service(info, allow_name_change=True))
