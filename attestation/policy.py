"""Appraisal: evidence + expected binding + policy -> a verdict listing every failed check.

Outcomes follow the IETF EAR draft's trust tiers: ``affirming`` (every check passed, nothing
relaxed), ``warning`` (passed only because the policy explicitly relaxed something, such as
accepting the simulated TEE), ``contraindicated`` (some check failed). Only the first two allow
escalation, and ``warning`` is reported to applications with every answer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import StrEnum

from attestation.evidence import Evidence, SimulatedEvidence


class Status(StrEnum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


@dataclass(frozen=True, slots=True)
class Failure:
    check: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppraisalPolicy:
    # Relaxation: accept evidence from the software-only attester. Never in production.
    allow_simulated_tee: bool = False
    # Accept only these code measurements (empty: any). For SGX, the MRENCLAVE allowlist.
    allowed_measurements: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    tee: str
    insecure: bool
    failures: tuple[Failure, ...] = ()
    relaxations: tuple[str, ...] = field(default=())

    @property
    def allows_escalation(self) -> bool:
        return self.status is not Status.CONTRAINDICATED

    def summary(self) -> str:
        if self.failures:
            return "; ".join(f"{f.check}: {f.message}" for f in self.failures)
        if self.relaxations:
            return "accepted only through relaxations: " + ", ".join(self.relaxations)
        return "all checks passed"


def appraise(
    evidence: Evidence, *, expected_report_data: bytes, policy: AppraisalPolicy
) -> Verdict:
    failures: list[Failure] = []
    relaxations: list[str] = []
    if isinstance(evidence, SimulatedEvidence):
        if policy.allow_simulated_tee:
            relaxations.append("allow_simulated_tee")
        else:
            failures.append(
                Failure(
                    "tee_type",
                    "hub offers simulated (insecure) evidence and the policy does not "
                    "set allow_simulated_tee",
                )
            )
    if not hmac.compare_digest(evidence.report_data, expected_report_data):
        failures.append(
            Failure("report_data", "REPORT_DATA does not bind the hub keys and our nonce")
        )
    if policy.allowed_measurements and evidence.measurement not in policy.allowed_measurements:
        failures.append(Failure("measurement", "code measurement is not in the allowlist"))
    if failures:
        status = Status.CONTRAINDICATED
    elif relaxations:
        status = Status.WARNING
    else:
        status = Status.AFFIRMING
    return Verdict(
        status=status,
        tee=evidence.type,
        insecure=evidence.insecure,
        failures=tuple(failures),
        relaxations=tuple(relaxations),
    )
