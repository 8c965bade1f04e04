"""Errors of the edge agent.

AgentError              base
├── ProfileError        no such firmware profile, or a malformed one
├── NotEnrolledError    the device has no identity yet (run `edge-agent enroll`)
├── EnrollmentError     the hub refused enrollment (carries the hub's error code)
└── HubUnavailable      the hub cannot be used now: unreachable, refused, or not attested
    └── AttestationRefused  the hub's evidence failed appraisal (carries the verdict)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attestation import Verdict


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


class HubUnavailable(AgentError):
    """Escalation is impossible right now; `reason` is a stable short code for answers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AttestationRefused(HubUnavailable):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__("attestation_refused", f"hub attestation refused: {verdict.summary()}")
        self.verdict = verdict
