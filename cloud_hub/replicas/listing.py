"""Which replicas a replica lists for agents (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from cloud_hub.store.replicas import ReplicaRow
from escalade_protocol.replica_list import ReplicaEntry


def live_entries(rows: Iterable[ReplicaRow], me: ReplicaEntry) -> tuple[ReplicaEntry, ...]:
    """The live replicas read from the database, with this replica always first and listed
    under its current URL and key: an agent asking us may use us, whether or not our latest
    heartbeat is committed yet. One entry per URL (a URL reused by a restarted replica names
    whoever registered it last)."""
    entries = {me.url: me}
    for row in sorted(rows, key=lambda r: r.heartbeat_at, reverse=True):
        entries.setdefault(row.url, ReplicaEntry(url=row.url, key_id=row.key_id, tee=row.tee))
    return tuple(entries.values())
