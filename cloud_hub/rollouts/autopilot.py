"""The hub's rollout autopilot: one pass over the active rollouts with `auto` bounds (blocking;
the hub runs it every `rollout_auto_s` on its database thread).

Each change happens in the rollout's own audited transaction, and only if the rollout is still
what the pass judged (same state and share): two replicas running the pass at once advance a
rollout one stage, not two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from cloud_hub.admin.stats import device_tallies
from cloud_hub.rollouts.assign import BUCKETS, Rollout, RolloutState, next_stage
from cloud_hub.rollouts.auto import Cohort, Verdict, judge
from cloud_hub.store.rollouts import all_device_models, change_rollout, list_rollouts
from escalade_protocol.errors import ErrorCode, ProtocolError

log = logging.getLogger("cloud_hub.rollouts")
# Devices whose outcomes one pass reads (the fleet the stats pages would list).
MAX_DEVICES = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    rollout_id: int
    verdict: Verdict
    reason: str


def _candidates(engine: Engine) -> list[Rollout]:
    return [
        r
        for r in list_rollouts(engine, live_only=True)
        if r.auto is not None
        and r.state is RolloutState.ACTIVE
        and r.devices is None
        and r.percent_bp < BUCKETS
    ]


def autopilot_pass(engine: Engine) -> list[Decision]:
    """Judge every auto rollout on the outcomes since its last change; apply the verdicts."""
    candidates = _candidates(engine)
    if not candidates:
        return []
    reported = all_device_models(engine)
    decisions = []
    for rollout in candidates:
        assert rollout.auto is not None
        running = {m.device_id for m in reported if m.bundle_digest == rollout.bundle_digest}
        failed = sum(
            1
            for m in reported
            if m.target_digest == rollout.bundle_digest and m.state in ("rolled_back", "refused")
        )
        tallies = device_tallies(engine, since=rollout.updated_at, after=None, limit=MAX_DEVICES)
        new = Cohort.of(t for d, t in tallies if d in running)
        baseline = Cohort.of(t for d, t in tallies if d not in running)
        verdict, reason = judge(rollout.auto, new, baseline, failed_devices=failed)
        decisions.append(Decision(rollout.rollout_id, verdict, reason))
        if verdict is Verdict.HOLD:
            continue
        if not _apply(engine, rollout, verdict, reason):
            continue
        log.info("rollout %d: %s (%s)", rollout.rollout_id, verdict.value, reason)
    return decisions


def _apply(engine: Engine, judged: Rollout, verdict: Verdict, reason: str) -> bool:
    """Pause or advance `judged` if it is unchanged since; False if another pass got there."""

    def change(current: Rollout) -> tuple[RolloutState, int, str]:
        if (current.state, current.percent_bp) != (judged.state, judged.percent_bp):
            raise ProtocolError(ErrorCode.CONFLICT, "changed since it was judged")
        if verdict is Verdict.PAUSE:
            return RolloutState.PAUSED, current.percent_bp, f"paused by the autopilot: {reason}"
        target = next_stage(current.percent_bp)
        return current.state, target, f"advanced to {target / 100:g}% by the autopilot: {reason}"

    action = "rollout_pause" if verdict is Verdict.PAUSE else "rollout_advance"
    try:
        change_rollout(engine, judged.rollout_id, change, action=action, actor="hub")
    except ProtocolError as exc:
        if exc.code is not ErrorCode.CONFLICT:
            raise
        return False
    return True
