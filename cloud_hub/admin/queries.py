"""Query parameters of the admin API's listings, as models (unknown parameters refused)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from cloud_hub.admin.models import MAX_PAGE, DeviceStatus


class Query(BaseModel):
    # Query strings are text: numbers are parsed from them (lax), anything unknown refused.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceQuery(Query):
    status: DeviceStatus | None = None
    profile: str | None = Field(default=None, max_length=64)
    # The previous page's next_cursor.
    cursor: uuid.UUID | None = None
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class AuditQuery(Query):
    device_id: uuid.UUID | None = None
    # Ids are 64-bit in every engine: a larger cursor is refused, not sent to the database.
    cursor: int | None = Field(default=None, ge=0, lt=1 << 63)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class NoQuery(Query):
    pass


class ModelQuery(Query):
    cursor: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class StatsWindow(Query):
    # Figures over outcome records received in the last this many hours.
    since_hours: float = Field(default=24.0, gt=0, le=24 * 366, allow_inf_nan=False)


class DeviceStatsQuery(StatsWindow):
    cursor: uuid.UUID | None = None
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class ModelStatsQuery(StatsWindow):
    model_id: str | None = Field(default=None, max_length=64)


class ReplicaQuery(Query):
    cursor: str | None = Field(default=None, max_length=36)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
