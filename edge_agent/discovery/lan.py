"""The agent on the LAN: feed discovered hubs into the pool, announce the agent itself.

One `AsyncZeroconf` serves both. With a static hub URL there is nothing to browse; the agent
may still announce itself. Nothing here is fatal: when multicast cannot be opened (a
container without it, a missing interface) the agent logs why and runs without it, degraded
to local answers if it has no static hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from edge_agent.discovery.announce import announce
from edge_agent.discovery.browse import Browser, Found, hub_browser
from edge_agent.discovery.mdns import (
    InterfaceError,
    MdnsSettings,
    open_zeroconf,
)
from edge_agent.discovery.txt import AgentAdvert
from edge_agent.hub_choice import CandidateSource
from edge_agent.hub_pool import CandidateInfo, HubPool

log = logging.getLogger("edge_agent.discovery")


def candidates(found: Mapping[str, Found]) -> dict[str, CandidateInfo]:
    """The usable announcements as the pool's candidates (URL -> claims)."""
    out: dict[str, CandidateInfo] = {}
    for f in found.values():
        url = f.url
        if url is None or f.advert is None:
            continue
        out[url] = CandidateInfo(kfp=f.advert.kfp, name=f.name, addresses=f.addresses, txt=f.txt)
    return out


@contextlib.asynccontextmanager
async def on_lan(
    settings: MdnsSettings,
    *,
    pool: HubPool | None,
    advert: AgentAdvert | None,
    port: int,
) -> AsyncIterator[Browser[Found] | None]:
    """Browse for hubs into `pool` (None: a static hub) and announce `advert` (None: don't)."""
    if pool is None and advert is None:
        yield None
        return
    try:
        zc = open_zeroconf(settings)
    except (OSError, InterfaceError) as exc:
        log.warning("LAN discovery off: cannot open mDNS (%s); see docs/discovery.md", exc)
        yield None
        return
    browser = None
    announcing: asyncio.Task[bool] | None = None
    try:
        if pool is not None:
            hubs = pool

            def changed(found: Mapping[str, Found]) -> None:
                hubs.set_candidates(CandidateSource.MDNS, candidates(found))

            browser = hub_browser(zc, changed)
            browser.start()
        if advert is not None:
            # Probing for a unique name takes about a second: not worth delaying start-up.
            announcing = asyncio.create_task(announce(zc, settings, advert, port))
        yield browser
    finally:
        if announcing is not None:
            announcing.cancel()
            await asyncio.gather(announcing, return_exceptions=True)
        if browser is not None:
            await browser.aclose()
        await zc.async_close()
