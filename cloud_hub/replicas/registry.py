"""This replica's entry in the shared replica table, and the live list it hands to agents.

Every `heartbeat_s` the replica renews its row and reads the live ones (heartbeat within
`liveness_s`); the list it serves comes from that snapshot, so ``POST /v1/replicas`` touches no
database. A replica killed without signing off drops out once its heartbeat is `liveness_s`
old; a clean shutdown signs off at once. Used on the event loop; the table is read and written
on the service's database thread.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_hub.identity import HubIdentity
from cloud_hub.replicas.listing import live_entries
from cloud_hub.store.replicas import ReplicaRow, ReplicaTable
from escalade_protocol.replica_list import ReplicaEntry, ReplicaList

log = logging.getLogger("cloud_hub.replicas")

Blocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSettings:
    # The URL agents reach this replica at; None: the URL it listens on.
    advertise_url: str | None = None
    heartbeat_s: float = 2.0
    # Several missed heartbeats, so that one slow commit does not drop a replica.
    liveness_s: float = 10.0


class ReplicaRegistry:
    def __init__(
        self,
        table: ReplicaTable,
        identity: HubIdentity,
        *,
        tee: str,
        settings: ReplicaSettings,
        blocking: Blocking,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.replica_id = uuid.uuid4()
        self.settings = settings
        self._table = table
        self._identity = identity
        self._tee = tee
        self._blocking = blocking
        self._now = wall_clock
        self._started_at = wall_clock()
        self._url: str | None = settings.advertise_url
        self._live: tuple[ReplicaEntry, ...] = ()

    def listening(self, url: str) -> None:
        """The socket is bound: from now on this replica can be listed."""
        if self._url is None:
            self._url = url
        self._live = (self._me(),)

    def _me(self) -> ReplicaEntry:
        assert self._url is not None
        return ReplicaEntry(url=self._url, key_id=self._identity.key_id, tee=self._tee)

    async def heartbeat(self) -> None:
        """Renew this replica's row and refresh the snapshot of live replicas."""
        if self._url is None:
            return  # not listening yet
        now = self._now()
        row = ReplicaRow(
            replica_id=self.replica_id,
            url=self._url,
            key_id=self._identity.key_id,
            tee=self._tee,
            started_at=self._started_at,
            heartbeat_at=now,
        )
        since = now - timedelta(seconds=self.settings.liveness_s)
        rows = await self._blocking(self._beat, row, since)
        self._live = live_entries(rows, self._me())

    def _beat(self, row: ReplicaRow, since: datetime) -> list[ReplicaRow]:
        self._table.heartbeat(row)
        return self._table.live(since)

    async def sign_off(self) -> None:
        if self._url is not None:
            await self._blocking(self._table.sign_off, self.replica_id, self._now())

    def signed_list(self, nonce: bytes) -> bytes:
        listing = ReplicaList(
            issuer_key_id=self._identity.key_id,
            nonce=nonce,
            issued_at_ms=int(self._now().timestamp() * 1000),
            replicas=self._live or ((self._me(),) if self._url else ()),
        )
        return listing.sign(self._identity.signing_key)
