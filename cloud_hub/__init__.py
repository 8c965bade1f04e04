"""Escalade cloud hub: attested escalation endpoint, large-model serving, enrollment."""

from cloud_hub.app import HubState, build_state, make_app
from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError, NoTeeError
from cloud_hub.escalation import EscalationPipeline, EscalationPolicy, EscalationService

__all__ = [
    "EscalationPipeline",
    "EscalationPolicy",
    "EscalationService",
    "HubConfig",
    "HubError",
    "HubState",
    "NoTeeError",
    "build_state",
    "make_app",
]
