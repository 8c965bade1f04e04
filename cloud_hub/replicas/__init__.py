"""Hub replicas sharing one database: registration, heartbeat and the signed replica list."""

from cloud_hub.replicas.listing import live_entries
from cloud_hub.replicas.registry import ReplicaRegistry, ReplicaSettings

__all__ = ["ReplicaRegistry", "ReplicaSettings", "live_entries"]
