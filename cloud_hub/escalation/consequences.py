"""What a checked escalation leads to, decided purely: the reply, and what happens to the device.

    judge(device, check, reputation, params) -> Outcome
        reply:   Answered(answer) | Refused(code, message)
        effect:  SaveReputation(reputation) | Quarantine(reason, evidence) | None

An embedding scoring over `reject_score` is refused (`embedding_rejected`); every check score
moves the device's CUSUM (`cloud_hub.poisoning.reputation`); the message that takes the CUSUM
over the limit for `hold` messages quarantines the device, with the evidence for the audit log.
The message itself is still answered or refused on its own score: quarantine applies from the
next one. The service carries the outcome out; nothing here touches a database or a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloud_hub.audit import QuarantineEvidence
from cloud_hub.poisoning import CheckResult, Reputation, ReputationParams, update
from cloud_hub.store import Device
from escalade_protocol.answer import Answer
from escalade_protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class Answered:
    answer: Answer


@dataclass(frozen=True, slots=True)
class Refused:
    code: ErrorCode
    message: str

    def error(self) -> ProtocolError:
        return ProtocolError(self.code, self.message)


@dataclass(frozen=True, slots=True)
class SaveReputation:
    """The CUSUM moved: write it back (behind the answer, not before it)."""

    reputation: Reputation


@dataclass(frozen=True, slots=True)
class Quarantine:
    """The device crossed the limit: quarantine it, durably, with this evidence."""

    reason: str
    evidence: QuarantineEvidence


Reply = Answered | Refused
Effect = SaveReputation | Quarantine


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Reply
    # The device's reputation after this message (the service keeps it in memory).
    reputation: Reputation
    effect: Effect | None
    # Accepted messages feed the device's cohort window; refused ones never do.
    observe_cohort: bool


def refusal(check: CheckResult, reject_score: float) -> Refused | None:
    """The refusal a check result earns on its own (reputation aside), or None."""
    if check.passed or check.score <= reject_score:
        return None
    return Refused(ErrorCode.EMBEDDING_REJECTED, f"embedding failed the hub's {check.reason} check")


def judge(
    device: Device,
    check: CheckResult,
    reputation: Reputation | None,
    params: ReputationParams,
    *,
    answer: Answer,
    reject_score: float,
) -> Outcome:
    """The outcome of one checked message from `device`, whose reputation was `reputation`
    (None: nothing in memory for the device's current generation, so start from the CUSUM
    stored with it)."""
    if reputation is None:
        reputation = Reputation(cusum=device.cusum)
    after = update(reputation, check, params)
    reply: Reply = refusal(check, reject_score) or Answered(answer)
    effect: Effect | None = None
    if reputation.state == "active" and after.state == "quarantined":
        effect = Quarantine(
            reason=(
                f"poisoning checks: CUSUM {after.cusum:.1f} over {after.messages} messages "
                f"({after.failures} failed, last: {check.reason or 'passed'})"
            ),
            evidence=QuarantineEvidence(
                cusum=round(after.cusum, 3),
                messages_seen=after.messages,
                failed_checks=after.failures,
                last_score=round(check.score, 3) if math.isfinite(check.score) else None,
                last_reason=check.reason,
                decision_limit=params.decision_limit,
            ),
        )
    elif after.cusum != reputation.cusum:
        effect = SaveReputation(after)
    return Outcome(reply=reply, reputation=after, effect=effect, observe_cohort=check.passed)
