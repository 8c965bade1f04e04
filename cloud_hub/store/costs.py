"""Per-device cost totals (`device_costs`): answers, hub model time, request bytes, price.

The service adds up each answer's cost in memory and flushes the sums every few seconds, so
the hot path writes nothing more; a flush adds to the stored totals (UPDATE ... + n), and
replicas sharing a database add to the same rows. A crash loses at most one flush interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud_hub.store.schema import device_costs


@dataclass(frozen=True, slots=True)
class CostTotals:
    answers: int = 0
    model_us: int = 0
    request_bytes: int = 0
    price_micros: int = 0

    def plus(self, other: CostTotals) -> CostTotals:
        return CostTotals(
            self.answers + other.answers,
            self.model_us + other.model_us,
            self.request_bytes + other.request_bytes,
            self.price_micros + other.price_micros,
        )


def add_device_costs(engine: Engine, totals: Mapping[uuid.UUID, CostTotals]) -> None:
    """Add `totals` to the devices' stored totals, creating rows for new devices."""
    if not totals:
        return
    c = device_costs.c
    now = datetime.now(UTC)
    rows = [
        {
            "id": str(device_id),
            "n": t.answers,
            "us": t.model_us,
            "b": t.request_bytes,
            "p": t.price_micros,
            "now": now,
        }
        for device_id, t in totals.items()
    ]
    add = (
        update(device_costs)
        .where(c.device_id == bindparam("id"))
        .values(
            answers=c.answers + bindparam("n"),
            model_us=c.model_us + bindparam("us"),
            request_bytes=c.request_bytes + bindparam("b"),
            price_micros=c.price_micros + bindparam("p"),
            updated_at=bindparam("now"),
        )
    )
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                known = set(
                    conn.execute(
                        select(c.device_id).where(c.device_id.in_([r["id"] for r in rows]))
                    ).scalars()
                )
                if known:
                    conn.execute(add, [r for r in rows if r["id"] in known])
                fresh = [_new(r) for r in rows if r["id"] not in known]
                if fresh:
                    conn.execute(insert(device_costs), fresh)
            return
        except IntegrityError:
            # Another replica inserted a new device's row first: all of it again, as updates.
            if attempt == 2:
                raise


def _new(row: Mapping[str, object]) -> dict[str, object]:
    return {
        "device_id": row["id"],
        "answers": row["n"],
        "model_us": row["us"],
        "request_bytes": row["b"],
        "price_micros": row["p"],
        "updated_at": row["now"],
    }


def device_cost_totals(
    engine: Engine, device_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, CostTotals]:
    c = device_costs.c
    ids = [str(d) for d in device_ids]
    if not ids:
        return {}
    with engine.connect() as conn:
        found = conn.execute(
            select(c.device_id, c.answers, c.model_us, c.request_bytes, c.price_micros).where(
                c.device_id.in_(ids)
            )
        ).all()
    return {uuid.UUID(d): CostTotals(int(n), int(us), int(b), int(p)) for d, n, us, b, p in found}
