"""Hub persistence."""

from cloud_hub.store.driver_insert import RowResult
from cloud_hub.store.repository import (
    Device,
    EscalationRecord,
    SavedReputation,
    Store,
    StoreCounts,
    is_busy,
    sqlite_url,
)

__all__ = [
    "Device",
    "EscalationRecord",
    "RowResult",
    "SavedReputation",
    "Store",
    "StoreCounts",
    "is_busy",
    "sqlite_url",
]
