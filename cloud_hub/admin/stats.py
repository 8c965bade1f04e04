"""Per-device and per-model figures for the admin API, read from two tables:

- `device_reports`: the outcome records agents deliver after the fact, one per answer they
  gave (local, escalated or degraded), with the hub's refusal code and the hub round trip as
  the agent measured it. Durable (never pruned), so these carry the counts and latencies; an
  agent's records arrive when its outbox is delivered, so recent figures may lag.
- `escalations`: the hub's own record of each escalation it accepted, kept only for the replay
  window (pruned past twice the timestamp window): `hub_accepted_recent` counts those.

Blocking functions over an SQLAlchemy Engine; the percentile is a pure function.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, select

from cloud_hub.store.schema import device_reports, escalations

QUANTILES = (0.5, 0.9, 0.99)


def percentile(sorted_values: Sequence[int], q: float) -> int | None:
    """Nearest-rank percentile of values in ascending order (None for none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(slots=True)
class Tally:
    outcomes: int = 0
    local: int = 0
    escalated: int = 0
    degraded: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    hub_latencies_us: list[int] = field(default_factory=list)
    hub_accepted_recent: int = 0

    def latency_percentiles(self) -> tuple[int | None, ...]:
        ordered = sorted(self.hub_latencies_us)
        return tuple(percentile(ordered, q) for q in QUANTILES)


def _tally(
    engine: Engine,
    report_keys: Sequence[ColumnElement[Any]],
    escalation_keys: Sequence[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
    accepted_where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], Tally]:
    tallies: dict[tuple[Any, ...], Tally] = defaultdict(Tally)
    r = device_reports.c
    with engine.connect() as conn:
        counts = conn.execute(
            select(*report_keys, r.path, r.hub_error, func.count())
            .where(*where)
            .group_by(*report_keys, r.path, r.hub_error)
        ).all()
        for *key, path, hub_error, n in counts:
            t = tallies[tuple(key)]
            t.outcomes += n
            if path == "local":
                t.local += n
            elif path == "escalated":
                t.escalated += n
            else:
                t.degraded += n
            if hub_error:
                t.refusals[hub_error] = t.refusals.get(hub_error, 0) + n
        latencies = conn.execute(
            select(*report_keys, r.hub_latency_us).where(
                *where, r.path == "escalated", r.hub_latency_us.is_not(None)
            )
        ).all()
        for *key, latency in latencies:
            tallies[tuple(key)].hub_latencies_us.append(int(latency))
        accepted = conn.execute(
            select(*escalation_keys, func.count()).where(*accepted_where).group_by(*escalation_keys)
        ).all()
        for *key, n in accepted:
            tallies[tuple(key)].hub_accepted_recent += n
    return tallies


def device_tallies(
    engine: Engine, *, since: datetime, after: uuid.UUID | None, limit: int
) -> list[tuple[uuid.UUID, Tally]]:
    """Figures of the devices with outcome records since `since`, in device-id order."""
    r = device_reports.c
    where = [r.received_at >= since]
    page = select(r.device_id).where(*where).distinct().order_by(r.device_id).limit(limit)
    if after is not None:
        page = page.where(r.device_id > str(after))
    with engine.connect() as conn:
        ids = list(conn.execute(page).scalars())
    if not ids:
        return []
    e = escalations.c
    tallies = _tally(
        engine,
        [r.device_id],
        [e.device_id],
        [*where, r.device_id.in_(ids)],
        [e.received_at >= since, e.device_id.in_(ids)],
    )
    return [(uuid.UUID(i), tallies[(i,)]) for i in ids]


def model_tallies(
    engine: Engine, *, since: datetime, model_id: str | None
) -> list[tuple[str, int, Tally]]:
    """Figures per model version with outcome records or accepted escalations since `since`."""
    r = device_reports.c
    e = escalations.c
    where = [r.received_at >= since]
    accepted_where = [e.received_at >= since]
    if model_id is not None:
        where.append(r.model_id == model_id)
        accepted_where.append(e.model_id == model_id)
    tallies = _tally(
        engine,
        [r.model_id, r.model_version],
        [e.model_id, e.model_version],
        where,
        accepted_where,
    )
    keys = sorted(tallies)
    return [(k[0], k[1], tallies[k]) for k in keys]
