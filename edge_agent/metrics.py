"""Prometheus metrics of the agent (``GET /metrics``), on a registry of its own per app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge_agent.breaker import BreakerState
from edge_agent.hub_choice import CandidateView
from edge_agent.hub_pool import HubPool
from escalade_protocol.messages import AnswerPath, AnswerReason

if TYPE_CHECKING:
    from edge_agent.api import AgentState

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def _candidate_state(view: CandidateView) -> str:
    if view.refusal is not None:
        return "refused"
    return "usable" if view.allows else "paused"


class AgentMetrics:
    def __init__(self, state: AgentState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "escalade_agent_requests",
            "Answers given, by path (local, escalated, degraded) and reason",
            ["path", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "escalade_agent_request_latency_seconds",
            "Time to answer one input, by path",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        def escalation_rate() -> float:
            router = state.router
            return router.escalations / router.decisions if router.decisions else 0.0

        Gauge(
            "escalade_agent_escalation_rate",
            "Share of routed inputs escalated since start",
            registry=r,
        ).set_function(escalation_rate)

        def attested() -> float:
            return float(state.client is not None and state.client.attested is not None)

        Gauge(
            "escalade_agent_hub_attested",
            "1 while the hub's attestation is fresh and trusted",
            registry=r,
        ).set_function(attested)
        breaker = Gauge(
            "escalade_agent_breaker_state",
            "Circuit breaker in front of the hub: 1 for the current state",
            ["state"],
            registry=r,
        )
        for value in BreakerState:

            def is_state(v: BreakerState = value) -> float:
                client = state.client
                current = client.status().breaker if client is not None else BreakerState.CLOSED
                return float(current is v)

            breaker.labels(value.value).set_function(is_state)
        candidates = Gauge(
            "escalade_agent_hub_candidates",
            "Hubs the agent knows (configured or discovered): usable, refused, or paused",
            ["state"],
            registry=r,
        )
        for kind in ("usable", "refused", "paused"):

            def count(k: str = kind) -> float:
                client = state.client
                if not isinstance(client, HubPool):
                    return float(k == "usable" and client is not None)
                views = client.candidates()
                return float(sum(1 for v in views if _candidate_state(v) == k))

            candidates.labels(kind).set_function(count)
        Gauge(
            "escalade_agent_outbox_depth",
            "Outcome records waiting for the hub's acknowledgement",
            registry=r,
        ).set_function(lambda: float(state.outbox.depth))
        Gauge(
            "escalade_agent_outbox_dropped",
            "Outcome records dropped because the outbox was full (oldest first)",
            registry=r,
        ).set_function(lambda: float(state.outbox.dropped))
        Gauge(
            "escalade_agent_model_batches",
            "session.run calls of the encoder (fewer than requests when micro-batching)",
            registry=r,
        ).set_function(lambda: float(state.runtime.batches))

    def answered(self, path: AnswerPath, reason: AnswerReason, seconds: float) -> None:
        self.requests.labels(path.value, reason.value).inc()
        self.latency.labels(path.value).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
