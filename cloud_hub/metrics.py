"""The hub's Prometheus metrics (`GET /metrics`), one registry per hub application.

A registry of its own (not prometheus_client's global one) so that several hubs in one process
(tests) never collide, and so that nothing registers at import time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "HubMetrics"]

# Powers of two up to the largest batch a hub accepts (`BatchingConfig`).
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.routes = Counter(
            "escalade_hub_routes",
            "Model-network answers by the meta-router's route reason",
            ["reason"],
            registry=self.registry,
        )
        self.escalations = Counter(
            "escalade_hub_escalations",
            "Escalations by outcome: answered, or the refusal's error code",
            ["outcome"],
            registry=self.registry,
        )
        self.escalation_seconds = Histogram(
            "escalade_hub_escalation_seconds",
            "Time from request body read to answer or refusal",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "escalade_hub_model_batch_size",
            "Embeddings per hub-model run (dynamic batching)",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.commit_size = Histogram(
            "escalade_hub_commit_size",
            "Escalation records per group commit",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.background_failures = Counter(
            "escalade_hub_background_failures",
            "Background jobs that failed (each is logged and runs again)",
            ["job"],
            registry=self.registry,
        )
        self.attestations = Counter(
            "escalade_hub_attestations",
            "Attestation requests by result: quoted, cached, rate_limited",
            ["result"],
            registry=self.registry,
        )

        self.audits = Counter(
            "escalade_hub_audits",
            "Audits by re-encoding, by outcome: passed, commitment_mismatch, encoding_mismatch, "
            "bad_input, no_reveal",
            ["outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
