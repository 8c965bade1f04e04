"""Escalade edge agent: local inference, routing, attested escalation, local API."""

from edge_agent.config import AgentConfig
from edge_agent.errors import (
    AgentError,
    AttestationRefused,
    EnrollmentError,
    HubUnavailable,
    NotEnrolledError,
    ProfileError,
)
from edge_agent.hub_client import HubClient
from edge_agent.profile import FirmwareProfile, detect, load_profile, select_providers
from edge_agent.router import Decision, decide
from edge_agent.runtime import EdgeRuntime

__all__ = [
    "AgentConfig",
    "AgentError",
    "AttestationRefused",
    "Decision",
    "EdgeRuntime",
    "EnrollmentError",
    "FirmwareProfile",
    "HubClient",
    "HubUnavailable",
    "NotEnrolledError",
    "ProfileError",
    "decide",
    "detect",
    "load_profile",
    "select_providers",
]
