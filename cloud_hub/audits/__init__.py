"""Audits by re-encoding: holding devices to the inputs their embeddings claim to encode.

`sampling` (pure) picks which answered escalations to audit; `verdict` (pure) judges a
reveal; `reencoder` runs the model's own encoder on a revealed input; `desk` (the shell, on
the event loop) holds the pending audits until their reveal or deadline.
"""

from cloud_hub.audits.desk import AuditDesk, AuditPolicy, PendingAudit
from cloud_hub.audits.sampling import AuditSampler
from cloud_hub.audits.verdict import AuditOutcome, judge_reveal

__all__ = [
    "AuditDesk",
    "AuditOutcome",
    "AuditPolicy",
    "AuditSampler",
    "PendingAudit",
    "judge_reveal",
]
