"""Poisoning checks on received embeddings: per request, per device, per cohort.

See docs/poisoning.md. Everything here is pure computation over `ReferenceStats`; the hub
pipeline decides what to refuse, store and audit.
"""

from cloud_hub.poisoning.checks import CheckResult, EmbeddingChecker, TierScores
from cloud_hub.poisoning.cohort import CohortFlag, cohort_outliers
from cloud_hub.poisoning.knn import KnnAuditor
from cloud_hub.poisoning.reference import ReferenceStats, ReferenceStatsError
from cloud_hub.poisoning.reputation import (
    Reputation,
    ReputationParams,
    calibrate,
    release,
    should_quarantine,
    update,
)

__all__ = [
    "CheckResult",
    "CohortFlag",
    "EmbeddingChecker",
    "KnnAuditor",
    "ReferenceStats",
    "ReferenceStatsError",
    "Reputation",
    "ReputationParams",
    "TierScores",
    "calibrate",
    "cohort_outliers",
    "release",
    "should_quarantine",
    "update",
]
