"""Hub persistence."""

from cloud_hub.store.repository import Device, EscalationRecord, Store, StoreCounts, sqlite_url

__all__ = ["Device", "EscalationRecord", "Store", "StoreCounts", "sqlite_url"]
