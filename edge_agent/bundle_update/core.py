"""The agent's bundle updates as pure transitions: what to do about the hub's assignment.

State is a frozen value replaced on every event (`assigned`, `refused`, `swapped`, `answered`,
`rolled_back`); `plan(state)` says what the shell should do next. A digest that was refused or
rolled back is never tried again by this process (until the hub assigns another one and then
this one again after a restart), so a bad bundle cannot make the agent flap.

    assigned(d) -> plan: Fetch(d)  -> swapped(d) -> PROBATION --N good answers--> IDLE (current)
                                  \\-> refused(d)               \\--a failed answer--> rolled_back
    assigned(None) while running a rollout's bundle -> plan: Revert (to the installed bundle)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from escalade_protocol.device_reports import BundleState


class Phase(StrEnum):
    IDLE = "idle"
    # Downloading, checking, loading and warming up a bundle (in the background).
    LOADING = "loading"
    # Serving a new bundle whose first answers are checked; the previous one stays loaded.
    PROBATION = "probation"


@dataclass(frozen=True, slots=True)
class Fetch:
    digest: str


@dataclass(frozen=True, slots=True)
class Revert:
    """Go back to the installed bundle (the hub assigns none now)."""


@dataclass(frozen=True, slots=True)
class Keep:
    pass


Action = Fetch | Revert | Keep


@dataclass(frozen=True, slots=True)
class UpdateState:
    installed: str
    running: str
    # What the hub assigns (None: the installed bundle); learned from its signed acks.
    assigned: str | None = None
    phase: Phase = Phase.IDLE
    # The bundle served before the one in probation (what a rollback returns to).
    previous: str | None = None
    probation_left: int = 0
    failed: frozenset[str] = frozenset()
    # Why the last assigned bundle failed (an ErrorCode value) and how.
    code: str = ""
    detail: str = ""
    # REFUSED (checks failed before loading) or ROLLED_BACK (load, warm-up or answers failed).
    outcome: BundleState = BundleState.REFUSED

    @property
    def wanted(self) -> str:
        return self.assigned or self.installed

    @property
    def status(self) -> BundleState:
        """What the device reports about its assignment."""
        if self.phase is not Phase.IDLE:
            return BundleState.PENDING
        if self.wanted == self.running:
            return BundleState.CURRENT
        if self.wanted in self.failed:
            return self.outcome
        return BundleState.PENDING


def initial(installed: str) -> UpdateState:
    return UpdateState(installed=installed, running=installed)


def assigned(state: UpdateState, digest: str | None) -> UpdateState:
    return replace(state, assigned=digest)


def plan(state: UpdateState) -> Action:
    if state.phase is not Phase.IDLE:
        return Keep()
    want = state.wanted
    if want == state.running or want in state.failed:
        return Keep()
    return Revert() if want == state.installed else Fetch(want)


def loading(state: UpdateState) -> UpdateState:
    return replace(state, phase=Phase.LOADING)


def interrupted(state: UpdateState) -> UpdateState:
    """The download stopped (hub away): idle again, the assignment is tried next period."""
    return replace(state, phase=Phase.IDLE)


def refused(
    state: UpdateState,
    digest: str,
    code: str,
    detail: str,
    *,
    outcome: BundleState = BundleState.REFUSED,
) -> UpdateState:
    """The bundle failed before it served: its checks (REFUSED), or load / warm-up
    (ROLLED_BACK: the device stays on what it ran)."""
    return replace(
        state,
        phase=Phase.IDLE,
        failed=state.failed | {digest},
        code=code,
        detail=detail,
        outcome=outcome,
    )


def swapped(state: UpdateState, digest: str, *, probation: int) -> UpdateState:
    """The loop now serves `digest`; its first `probation` answers are checked."""
    return replace(
        state,
        running=digest,
        previous=state.running,
        phase=Phase.PROBATION if probation > 0 else Phase.IDLE,
        probation_left=probation,
        code="",
        detail="",
    )


def answered(state: UpdateState, *, ok: bool) -> tuple[UpdateState, bool]:
    """One answer of the bundle in probation; True: roll back now."""
    if state.phase is not Phase.PROBATION:
        return state, False
    if not ok:
        return state, True
    left = state.probation_left - 1
    if left > 0:
        return replace(state, probation_left=left), False
    return replace(state, phase=Phase.IDLE, probation_left=0, previous=None), False


def rolled_back(state: UpdateState, code: str, detail: str) -> UpdateState:
    """Back on the previous bundle after the one in probation failed."""
    assert state.previous is not None
    return replace(
        state,
        running=state.previous,
        previous=None,
        phase=Phase.IDLE,
        probation_left=0,
        failed=state.failed | {state.running},
        code=code,
        detail=detail,
        outcome=BundleState.ROLLED_BACK,
    )
