"""Hub persistence."""

from cloud_hub.store.audit_chain import BrokenLink, ChainVerdict
from cloud_hub.store.audit_log import AuditEvent
from cloud_hub.store.driver_insert import RowResult
from cloud_hub.store.repository import (
    AdminToken,
    Device,
    EnrollmentToken,
    EscalationRecord,
    SavedReputation,
    Store,
    StoreCounts,
    is_busy,
    migrate_database,
    sqlite_url,
)

__all__ = [
    "AdminToken",
    "AuditEvent",
    "BrokenLink",
    "ChainVerdict",
    "Device",
    "EnrollmentToken",
    "EscalationRecord",
    "RowResult",
    "SavedReputation",
    "Store",
    "StoreCounts",
    "is_busy",
    "migrate_database",
    "sqlite_url",
]
