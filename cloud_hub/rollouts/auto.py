"""Automatic advance of a staged rollout: pure judgement over the outcome records agents send.

The devices that report running the rollout's bundle form the new cohort; every other device
reporting outcomes in the same window is the baseline. The rollout advances one stage of the
ladder (1% -> 10% -> 100%) once the new cohort has `min_outcomes` answers since the last
change, its refusal rate (escalations the hub refused, e.g. embeddings its checks reject) is
at most `max_error_rate`, and its escalation rate exceeds the baseline's by at most
`max_escalation_increase`. Any device that refused or rolled back the bundle pauses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from cloud_hub.admin.stats import Tally
from cloud_hub.rollouts.assign import AutoAdvance


@dataclass(frozen=True, slots=True)
class Cohort:
    outcomes: int = 0
    escalated: int = 0
    refused: int = 0

    @classmethod
    def of(cls, tallies: Iterable[Tally]) -> Cohort:
        outcomes = escalated = refused = 0
        for t in tallies:
            outcomes += t.outcomes
            escalated += t.escalated
            refused += sum(t.refusals.values())
        return cls(outcomes, escalated, refused)

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.outcomes if self.outcomes else 0.0

    @property
    def error_rate(self) -> float:
        return self.refused / self.outcomes if self.outcomes else 0.0


class Verdict(StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    PAUSE = "pause"


def judge(
    policy: AutoAdvance, new: Cohort, baseline: Cohort, *, failed_devices: int
) -> tuple[Verdict, str]:
    if failed_devices:
        return Verdict.PAUSE, f"{failed_devices} device(s) refused or rolled back the bundle"
    if new.outcomes < policy.min_outcomes:
        return Verdict.HOLD, f"{new.outcomes} of {policy.min_outcomes} answers seen"
    if new.error_rate > policy.max_error_rate:
        return Verdict.PAUSE, (
            f"refusal rate {new.error_rate:.2%} above {policy.max_error_rate:.2%}"
        )
    if baseline.outcomes and (
        new.escalation_rate - baseline.escalation_rate > policy.max_escalation_increase
    ):
        return Verdict.PAUSE, (
            f"escalation rate {new.escalation_rate:.2%} against {baseline.escalation_rate:.2%}"
        )
    return Verdict.ADVANCE, (
        f"{new.outcomes} answers: refusals {new.error_rate:.2%}, escalations "
        f"{new.escalation_rate:.2%} (others {baseline.escalation_rate:.2%})"
    )
