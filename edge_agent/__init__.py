"""Escalade edge agent: local inference, routing, attested escalation, local API, outbox."""

from edge_agent.breaker import Breaker, BreakerState
from edge_agent.bundle_check import BundleCheck, BundleFailure, check_bundle
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.errors import (
    AgentError,
    AttestationRefused,
    EnrollmentError,
    HubUnavailable,
    NotEnrolledError,
    ProfileError,
    TransportError,
)
from edge_agent.hub_client import HubClient
from edge_agent.hub_pool import CandidateInfo, HubPool, Hubs
from edge_agent.outbox import Outbox
from edge_agent.profile import (
    FirmwareProfile,
    HostFacts,
    detect,
    load_profile,
    read_host,
    select_providers,
)
from edge_agent.router import Decision, decide
from edge_agent.runtime import EdgeRuntime
from edge_agent.transport import AiohttpTransport, Reply, Transport

__all__ = [
    "AgentConfig",
    "AgentError",
    "AiohttpTransport",
    "AttestationRefused",
    "Breaker",
    "BreakerState",
    "BundleCheck",
    "BundleFailure",
    "CandidateInfo",
    "ConfigError",
    "Decision",
    "EdgeRuntime",
    "EnrollmentError",
    "FirmwareProfile",
    "HostFacts",
    "HubClient",
    "HubPool",
    "HubUnavailable",
    "Hubs",
    "NotEnrolledError",
    "Outbox",
    "ProfileError",
    "Reply",
    "Transport",
    "TransportError",
    "check_bundle",
    "decide",
    "detect",
    "load_profile",
    "read_host",
    "select_providers",
]
