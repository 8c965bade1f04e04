"""Following a hub's replicas: the signed replica list becomes the pool's "replicas" source.

Every `period_s` the agent asks the hub it uses (already attested) for the replicas alive now
(`HubClient.replicas`: bound to a fresh nonce, signed by that hub's attested key). Each listed
replica becomes a candidate whose claimed key id must match what its own evidence binds; the
pool attests each before use and balances over the attested ones (fewest outstanding
requests). A replica that leaves the list (stopped heartbeating, signed off) leaves the pool;
one that dies between two looks is left by the pool's breaker at its first failure, and the
request is retried on another. A hub that serves no replica list (an older build) is asked
again at the next period; its static or discovered URL keeps working either way.
"""

from __future__ import annotations

import asyncio
import logging

from edge_agent.errors import HubUnavailable
from edge_agent.hub_choice import CandidateSource
from edge_agent.hub_pool import CandidateInfo, HubPool

log = logging.getLogger("edge_agent.replicas")


async def refresh_replicas(pool: HubPool) -> int | None:
    """Ask the hub in use for its replicas and make them the pool's replica candidates;
    returns how many were listed, or None when no hub could be asked."""
    client = pool.preferred_client()
    if client is None or client.attested is None:
        return None
    try:
        listing = await client.replicas()
    except HubUnavailable as exc:
        log.debug("no replica list this time: %s", exc)
        return None
    pool.set_candidates(
        CandidateSource.REPLICAS,
        {
            entry.url: CandidateInfo(kfp=entry.key_id.hex(), name=entry.tee)
            for entry in listing.replicas
        },
    )
    return len(listing.replicas)


async def follow_replicas(pool: HubPool, *, period_s: float) -> None:
    known: int | None = None
    while True:
        count = await refresh_replicas(pool)
        if count is not None and count != known:
            log.info("hub lists %d replica(s)", count)
            known = count
        await asyncio.sleep(period_s)
