"""The hub's escalation path, in one place: a pure core and the service that owns its state.

pipeline.py        inspect, open, conclude, answer: pure over typed values
consequences.py    judge: reply, reputation, quarantine: pure
service.py         EscalationService: runs the steps, owns every piece of state below
batcher.py         dynamic batching of the hub model
recorder.py        group commit of escalation records (the replay check)
devices.py         the device cache
reputation_book.py per-device CUSUM in memory, written behind
cohort_watch.py    per-device window means and the cohort sweep
supervisor.py      periodic background jobs that are logged and restarted, never lost
"""

from cloud_hub.escalation.batcher import BatchingConfig, DynamicBatcher
from cloud_hub.escalation.consequences import (
    Answered,
    Outcome,
    Quarantine,
    Refused,
    SaveReputation,
    judge,
)
from cloud_hub.escalation.pipeline import EscalationPipeline, EscalationPolicy
from cloud_hub.escalation.service import EscalationService, ServiceConfig

__all__ = [
    "Answered",
    "BatchingConfig",
    "DynamicBatcher",
    "EscalationPipeline",
    "EscalationPolicy",
    "EscalationService",
    "Outcome",
    "Quarantine",
    "Refused",
    "SaveReputation",
    "ServiceConfig",
    "judge",
]
