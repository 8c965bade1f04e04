"""Local answer or escalation: pure decisions over the local head's output.

`decide(state, signals, now=, rng_draw=)` -> `Decision`, then `observe(state, outcome)` ->
a new `RouterState`: call `observe` with `Routed` right after each decision (it spends budget
tokens and tracks the escalation rate) and with `HubAnswered` when the hub replies (latency,
and whether the hub agreed with the local answer). Nothing here does I/O or reads a clock.

Online learning. The threshold is the `rate`-quantile of a window of recent signals, so the
router escalates a steady fraction of inputs as they drift. In "miss" mode (a target miss rate
is known from calibration) that rate is steered by the hub's feedback: the miss rate is the
share of inputs answered locally that the hub would have answered differently, estimated
without bias from explorations (escalations of confident inputs with probability `explore`,
weighted by 1/explore). Before the window fills, the calibrated threshold is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

SignalName = Literal["max_probability", "margin", "neg_entropy", "learned"]
Route = Literal["auto", "local", "hub"]

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_DAY = 86_400.0


class Reason(StrEnum):
    CONFIDENT = "confident"
    UNCERTAIN = "uncertain"
    EXPLORE = "explore"
    BUDGET_MINUTE = "budget_minute"
    BUDGET_DAY = "budget_day"
    LATENCY_BUDGET = "latency_budget"
    HUB_DOWN = "hub_down"
    FORCED_LOCAL = "forced_local"
    FORCED_HUB = "forced_hub"


@dataclass(frozen=True, slots=True)
class Decision:
    escalate: bool
    reason: Reason
    # The routing signal's value (the max probability for the default signal).
    confidence: float
    threshold: float = math.nan
    # Probability with which a confident input was explored (for the 1/p weight); 0 if not.
    explore_probability: float = 0.0


# --- signals -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signals:
    """Confidence signals of one input; higher means more confident for each."""

    max_probability: float
    margin: float
    neg_entropy: float
    embedding_norm: float = math.nan
    learned: float | None = None

    def value(self, name: SignalName) -> float:
        if name == "learned":
            if self.learned is None:
                raise ValueError("signal 'learned' needs the router model's output")
            return self.learned
        return float(getattr(self, name))


def signal_matrix(probabilities: npt.NDArray[np.floating]) -> dict[str, npt.NDArray[np.float64]]:
    """max_probability, margin and neg_entropy for a batch of probability rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    top2 = -np.sort(-p, axis=1)[:, :2]
    clipped = np.clip(p, 1e-12, 1.0)
    return {
        "max_probability": top2[:, 0],
        "margin": top2[:, 0] - top2[:, 1],
        "neg_entropy": (p * np.log(clipped)).sum(axis=1),
    }


def compute_signals(
    probabilities: npt.NDArray[np.floating],
    embedding: npt.NDArray[np.floating] | None = None,
    *,
    learned: float | None = None,
) -> Signals:
    row = signal_matrix(np.asarray(probabilities).reshape(1, -1))
    norm = math.nan if embedding is None else float(np.linalg.norm(embedding))
    return Signals(
        max_probability=float(row["max_probability"][0]),
        margin=float(row["margin"][0]),
        neg_entropy=float(row["neg_entropy"][0]),
        embedding_norm=norm,
        learned=learned,
    )


# --- token buckets -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; one escalation spends one token.

    So escalations in any interval of length T never exceed capacity + rate * T.
    """

    capacity: float
    rate: float
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, capacity: float, period_s: float, now: float = 0.0) -> TokenBucket:
        return cls(capacity, capacity / period_s, capacity, now)

    def at(self, now: float) -> TokenBucket:
        """Refilled up to `now` (a clock going backwards refills nothing)."""
        elapsed = max(0.0, now - self.updated_at)
        tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        return replace(self, tokens=tokens, updated_at=max(now, self.updated_at))

    def has_token(self, now: float) -> bool:
        return self.at(now).tokens >= 1.0

    def spend(self, now: float) -> TokenBucket:
        refilled = self.at(now)
        return replace(refilled, tokens=max(0.0, refilled.tokens - 1.0))


# --- state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterConfig:
    signal: SignalName = "max_probability"
    # The calibrated prior: threshold and the escalation rate it gave on the calibration split.
    threshold: float = 0.5
    target_rate: float = 0.1
    # Share of inputs answered locally that the hub would change, at the calibrated threshold;
    # None: keep the escalation rate at target_rate (a budget) instead.
    target_miss_rate: float | None = None
    adaptive: bool = True
    explore: float = 0.02
    window: int = 512
    warmup: int = 128
    rate_step: float = 0.0005
    max_rate: float = 1.0
    per_minute: float | None = None
    per_day: float | None = None
    latency_budget_ms: float | None = None
    latency_window: int = 32
    latency_min_samples: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.explore < 1.0:
            raise ValueError("explore must be in [0, 1)")
        if not 0.0 <= self.target_rate <= self.max_rate <= 1.0:
            raise ValueError("need 0 <= target_rate <= max_rate <= 1")
        if self.window < 1 or self.warmup < 0 or self.latency_window < 1:
            raise ValueError("window sizes must be positive")


@dataclass(frozen=True, slots=True)
class RouterState:
    config: RouterConfig
    threshold: float
    rate: float
    recent: tuple[float, ...] = ()
    latencies_ms: tuple[float, ...] = ()
    minute: TokenBucket | None = None
    day: TokenBucket | None = None
    decisions: int = 0
    escalations: int = 0
    explorations: int = field(default=0)

    @classmethod
    def initial(cls, config: RouterConfig, *, now: float = 0.0) -> RouterState:
        minute = day = None
        if config.per_minute is not None:
            minute = TokenBucket.full(config.per_minute, SECONDS_PER_MINUTE, now)
        if config.per_day is not None:
            day = TokenBucket.full(config.per_day, SECONDS_PER_DAY, now)
        return cls(config, config.threshold, config.target_rate, minute=minute, day=day)

    def hub_p95_ms(self) -> float | None:
        if len(self.latencies_ms) < self.config.latency_min_samples:
            return None
        return float(np.percentile(np.asarray(self.latencies_ms), 95))


# --- decide --------------------------------------------------------------------------------


def _blocked(state: RouterState, now: float, hub_up: bool) -> Reason | None:
    """Why an escalation the router wants cannot happen now, or None."""
    if not hub_up:
        return Reason.HUB_DOWN
    budget = state.config.latency_budget_ms
    p95 = state.hub_p95_ms()
    if budget is not None and p95 is not None and p95 > budget:
        return Reason.LATENCY_BUDGET
    if state.minute is not None and not state.minute.has_token(now):
        return Reason.BUDGET_MINUTE
    if state.day is not None and not state.day.has_token(now):
        return Reason.BUDGET_DAY
    return None


def _explore_probability(state: RouterState) -> float:
    return state.config.explore if state.config.adaptive else 0.0


def _decide(
    state: RouterState, signals: Signals, *, now: float, rng_draw: float, where: str, hub_up: bool
) -> Decision:
    s = signals.value(state.config.signal)
    threshold = state.threshold
    if where == "local":
        return Decision(False, Reason.FORCED_LOCAL, s, threshold)
    if where == "hub":
        return Decision(True, Reason.FORCED_HUB, s, threshold)
    if where != "auto":
        raise ValueError(f"unknown route {where!r}")
    explore = 0.0
    if s >= threshold:
        explore = _explore_probability(state)
        if rng_draw >= explore:
            return Decision(False, Reason.CONFIDENT, s, threshold)
        wanted = Reason.EXPLORE
    else:
        wanted = Reason.UNCERTAIN
    blocked = _blocked(state, now, hub_up)
    if blocked is not None:
        return Decision(False, blocked, s, threshold)
    return Decision(True, wanted, s, threshold, explore)


@overload
def decide(
    state: RouterState,
    signals: Signals,
    *,
    now: float,
    rng_draw: float,
    route: Route = "auto",
    hub_up: bool = True,
) -> Decision: ...
@overload
def decide(state: npt.NDArray[np.floating], *, threshold: float, route: str) -> Decision: ...
def decide(
    state: RouterState | npt.NDArray[np.floating],
    signals: Signals | None = None,
    *,
    now: float = 0.0,
    rng_draw: float = 1.0,
    route: str = "auto",
    hub_up: bool = True,
    threshold: float | None = None,
) -> Decision:
    """Local or hub for one input; `rng_draw` is uniform in [0, 1) (drives exploration).

    `hub_up` is the circuit breaker's view (False while it is open). Also accepts the older
    `decide(probabilities, threshold=, route=)`: a fixed max-probability threshold.
    """
    if not isinstance(state, RouterState):
        if threshold is None:
            raise TypeError("decide(probabilities, ...) needs threshold=")
        fixed = RouterState.initial(RouterConfig(threshold=threshold, adaptive=False))
        return _decide(
            fixed, compute_signals(state), now=now, rng_draw=1.0, where=route, hub_up=True
        )
    if signals is None:
        raise TypeError("decide(state, signals, ...) needs signals")
    return _decide(state, signals, now=now, rng_draw=rng_draw, where=route, hub_up=hub_up)


# --- observe -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Routed:
    """A decision was taken at `now` (call right after `decide`)."""

    decision: Decision
    now: float


@dataclass(frozen=True, slots=True)
class HubAnswered:
    """The hub answered an escalation: its latency and whether it agreed with the local head."""

    decision: Decision
    agreed: bool
    latency_ms: float


Outcome = Routed | HubAnswered


def _threshold(state: RouterState, recent: tuple[float, ...], rate: float) -> float:
    """The `rate`-quantile of recent signals, once the window has warmed up."""
    config = state.config
    if len(recent) < max(config.warmup, 1):
        return config.threshold
    explore = _explore_probability(state)
    # Explorations escalate explore * (1 - q) more, so q + explore * (1 - q) = rate.
    q = min(1.0, max(0.0, (rate - explore) / (1.0 - explore)))
    if q <= 0.0:
        return -math.inf
    values = np.asarray(recent)
    # A threshold just above the q-quantile escalates a q share (signals below it).
    return float(np.quantile(values, q, method="inverted_cdf")) + 1e-12 if q < 1.0 else math.inf


def observe(state: RouterState, outcome: Outcome) -> RouterState:
    config = state.config
    if isinstance(outcome, HubAnswered):
        latencies = (*state.latencies_ms, outcome.latency_ms)[-config.latency_window :]
        rate = state.rate
        d = outcome.decision
        learns = config.adaptive and config.target_miss_rate is not None
        missed = d.reason is Reason.EXPLORE and not outcome.agreed and d.explore_probability > 0
        if learns and missed:
            # An explored disagreement is a local miss, worth 1/p of all confident inputs.
            rate = min(config.max_rate, rate + config.rate_step / d.explore_probability)
        return replace(state, latencies_ms=latencies, rate=rate)

    d = outcome.decision
    minute, day = state.minute, state.day
    if d.escalate:
        minute = minute.spend(outcome.now) if minute is not None else None
        day = day.spend(outcome.now) if day is not None else None
    new = replace(
        state,
        minute=minute,
        day=day,
        decisions=state.decisions + 1,
        escalations=state.escalations + int(d.escalate),
        explorations=state.explorations + int(d.reason is Reason.EXPLORE),
    )
    if not config.adaptive or d.reason in (Reason.FORCED_LOCAL, Reason.FORCED_HUB):
        return new
    recent = (*state.recent, d.confidence)[-config.window :]
    rate = state.rate
    if config.target_miss_rate is not None:
        # Every decision lowers the rate by the target; explored misses raise it (above).
        rate = max(0.0, rate - config.rate_step * config.target_miss_rate)
    return replace(new, recent=recent, rate=rate, threshold=_threshold(state, recent, rate))


# Tensor names of the optional learned router model (router.onnx): inputs are the bundle's
# EMBEDDING and PROBABILITIES tensors, output [N, 1] the probability the local answer is right.
LEARNED_OUTPUT = "local_correct"
