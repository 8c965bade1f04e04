"""Errors of the edge agent.

AgentError              base
├── ProfileError        no such firmware profile, or a malformed one
├── ConfigError         invalid configuration (edge_agent.config), names key and source
├── NotEnrolledError    the device has no identity yet (run `edge-agent enroll`)
├── EnrollmentError     the hub refused enrollment (carries the hub's error code)
├── TransportError      the hub could not be reached or did not answer in time
└── HubUnavailable      the hub cannot be used now: unreachable, refused, or not attested
    └── AttestationRefused  the hub's evidence failed appraisal (carries the check)

`HubUnavailable.reason` is an `AnswerReason` (typed, never a string to parse) and `code` the
hub's `ErrorCode` when the hub itself refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from escalade_protocol.errors import ErrorCode
from escalade_protocol.messages import AnswerReason

if TYPE_CHECKING:
    from edge_agent.bundle_check import BundleCheck


class AgentError(Exception):
    pass


class ProfileError(AgentError):
    pass


class NotEnrolledError(AgentError):
    pass


class EnrollmentError(AgentError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class TransportError(AgentError):
    """The hub did not answer: `timeout` tells a slow hub from an unreachable one."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class HubUnavailable(AgentError):
    """Escalation is impossible right now; `reason` says why, `code` is the hub's refusal."""

    def __init__(
        self, reason: AnswerReason, message: str, *, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


class AttestationRefused(HubUnavailable):
    def __init__(self, check: BundleCheck) -> None:
        reason = (
            AnswerReason.MODEL_MISMATCH
            if check.only_model_mismatch
            else AnswerReason.ATTESTATION_REFUSED
        )
        super().__init__(reason, f"hub attestation refused: {check.summary()}")
        self.check = check
