"""Browse and resolve ``_escalade-hub._tcp.local.``: what hubs the LAN announces.

`Browser` follows one service type's added / updated / removed events, resolves each instance
asynchronously (SRV, TXT, addresses) and reports the whole set after every change. A removed
instance (goodbye packet, or its records expired) leaves the set at once. What it reports is
a list of claims: `Found.advert` is None, with the reason in `Found.error`, when the TXT
record is not an Escalade hub's; the rest are attested before any use.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edge_agent.discovery.mdns import MdnsSettings, open_zeroconf
from edge_agent.discovery.txt import HUB_SERVICE, HubAdvert, TxtError, decode_txt, parse_hub

log = logging.getLogger("edge_agent.discovery")


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """One resolved hub announcement."""

    name: str
    addresses: tuple[str, ...]
    port: int
    txt: tuple[tuple[str, str], ...]
    advert: HubAdvert | None
    error: str | None = None

    @property
    def url(self) -> str | None:
        """The hub's base URL (IPv4 first), or None when the announcement is unusable."""
        if self.advert is None or not self.addresses:
            return None
        ips = sorted((ipaddress.ip_address(a) for a in self.addresses), key=lambda i: i.version)
        host = str(ips[0]) if ips[0].version == 4 else f"[{ips[0]}]"
        return f"http://{host}:{self.port}"


def found_from(info: AsyncServiceInfo) -> Found:
    addresses = tuple(info.parsed_scoped_addresses())
    try:
        txt = decode_txt(info.properties)
        advert: HubAdvert | None = parse_hub(info.properties)
        error = None
    except TxtError as exc:
        txt, advert, error = {}, None, str(exc)
    if advert is not None and not addresses:
        advert, error = None, "announcement has no address"
    return Found(
        name=info.name,
        addresses=addresses,
        port=info.port or 0,
        txt=tuple(sorted(txt.items())),
        advert=advert,
        error=error,
    )


T = TypeVar("T")


class Browser(Generic[T]):
    """Follows one service type; `parse` turns each resolved instance into a `T`."""

    def __init__(
        self,
        zc: AsyncZeroconf,
        service_type: str,
        parse: Callable[[AsyncServiceInfo], T],
        on_change: Callable[[Mapping[str, T]], None],
        *,
        resolve_timeout_s: float = 3.0,
    ) -> None:
        self._zc = zc
        self._type = service_type
        self._parse = parse
        self._on_change = on_change
        self._timeout_ms = resolve_timeout_s * 1000.0
        self._found: dict[str, T] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._browser: AsyncServiceBrowser | None = None

    @property
    def found(self) -> Mapping[str, T]:
        return dict(self._found)

    def start(self) -> None:
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, self._type, handlers=[self._on_state]
        )

    def _on_state(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called on the event loop by zeroconf; the resolution runs as a task.
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()
        if state_change is ServiceStateChange.Removed:
            if self._found.pop(name, None) is not None:
                log.info("announcement %s withdrawn", name)
                self._on_change(self.found)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(functools.partial(self._done, name))

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("resolving %s failed: %s", name, task.exception())

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(self._type, name)
        if not await info.async_request(self._zc.zeroconf, self._timeout_ms):
            log.info("announcement %s did not resolve", name)
            return
        found = self._parse(info)
        if self._found.get(name) != found:
            self._found[name] = found
            self._on_change(self.found)

    async def aclose(self) -> None:
        """Stop browsing; resolutions in flight are cancelled."""
        for task in self._resolving.values():
            task.cancel()
        await asyncio.gather(*self._resolving.values(), return_exceptions=True)
        if self._browser is not None:
            await self._browser.async_cancel()


def _logged(info: AsyncServiceInfo) -> Found:
    found = found_from(info)
    if found.advert is None:
        log.warning("ignoring announcement %s: %s", found.name, found.error)
    else:
        log.info("hub announcement %s at %s (kfp %s)", found.name, found.url, found.advert.kfp)
    return found


def hub_browser(
    zc: AsyncZeroconf, on_change: Callable[[Mapping[str, Found]], None]
) -> Browser[Found]:
    """A browser of ``_escalade-hub._tcp.local.`` reporting `Found` hubs."""
    return Browser(zc, HUB_SERVICE, _logged, on_change)


async def listen(
    mdns: MdnsSettings, service_type: str, parse: Callable[[AsyncServiceInfo], T], seconds: float
) -> dict[str, T]:
    """What the LAN announces of `service_type` within `seconds` (its own `AsyncZeroconf`)."""
    zc = open_zeroconf(mdns)
    try:
        browser = Browser(zc, service_type, parse, lambda _found: None)
        browser.start()
        await asyncio.sleep(seconds)  # mDNS has no "all answers are in": listen a while
        found = dict(browser.found)
        await browser.aclose()
    finally:
        await zc.async_close()
    return found
