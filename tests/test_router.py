"""The edge router: signals, decisions, budgets, online learning (pure logic + properties)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.router import (
    HubAnswered,
    Reason,
    Routed,
    RouterConfig,
    RouterState,
    Signals,
    TokenBucket,
    compute_signals,
    decide,
    observe,
)
from escalade.modelbuild.router import calibrate_threshold, miss_rate


def sig(value: float) -> Signals:
    return Signals(max_probability=value, margin=value, neg_entropy=value - 1.0)


def test_signals_are_oriented_higher_is_more_confident() -> None:
    sure = compute_signals(np.array([0.98, 0.01, 0.01]), np.ones(4))
    unsure = compute_signals(np.array([0.4, 0.35, 0.25]))
    assert sure.max_probability > unsure.max_probability
    assert sure.margin > unsure.margin
    assert sure.neg_entropy > unsure.neg_entropy
    assert sure.embedding_norm == pytest.approx(2.0)
    assert math.isnan(unsure.embedding_norm)
    with pytest.raises(ValueError, match="learned"):
        sure.value("learned")


def test_reasons_forced_and_blocked() -> None:
    config = RouterConfig(threshold=0.5, explore=0.0, per_minute=1, latency_budget_ms=100)
    state = RouterState.initial(config)
    assert decide(state, sig(0.9), now=0, rng_draw=0.5).reason is Reason.CONFIDENT
    assert decide(state, sig(0.1), now=0, rng_draw=0.5).reason is Reason.UNCERTAIN
    assert decide(state, sig(0.1), now=0, rng_draw=0.5, route="local").reason is Reason.FORCED_LOCAL
    assert decide(state, sig(0.9), now=0, rng_draw=0.5, route="hub").escalate
    down = decide(state, sig(0.1), now=0, rng_draw=0.5, hub_up=False)
    assert (down.escalate, down.reason) == (False, Reason.HUB_DOWN)
    spent = observe(state, Routed(decide(state, sig(0.1), now=0, rng_draw=0.5), 0))
    assert decide(spent, sig(0.1), now=1, rng_draw=0.5).reason is Reason.BUDGET_MINUTE
    assert decide(spent, sig(0.1), now=61, rng_draw=0.5).reason is Reason.UNCERTAIN
    slow = state
    for _ in range(config.latency_min_samples):
        slow = observe(slow, HubAnswered(decide(state, sig(0.1), now=0, rng_draw=0.5), True, 500))
    assert decide(slow, sig(0.1), now=0, rng_draw=0.5).reason is Reason.LATENCY_BUDGET
    day = RouterState.initial(RouterConfig(threshold=0.5, per_day=1))
    day = observe(day, Routed(decide(day, sig(0.1), now=0, rng_draw=0.9), 0))
    assert decide(day, sig(0.1), now=120, rng_draw=0.9).reason is Reason.BUDGET_DAY


def test_exploration_escalates_confident_inputs_now_and_then() -> None:
    state = RouterState.initial(RouterConfig(threshold=0.5, explore=0.1))
    explored = decide(state, sig(0.9), now=0, rng_draw=0.05)
    assert (explored.escalate, explored.reason) == (True, Reason.EXPLORE)
    assert explored.explore_probability == pytest.approx(0.1)
    assert not decide(state, sig(0.9), now=0, rng_draw=0.5).escalate


def test_legacy_call_still_works() -> None:
    probabilities = np.array([0.6, 0.4], np.float32)
    decision = decide(probabilities, threshold=0.7, route="auto")
    assert (decision.escalate, decision.reason.value) == (True, "uncertain")
    assert decision.confidence == pytest.approx(0.6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.floats(0, 1), st.floats(0, 1), st.booleans()),
        max_size=120,
    ),
    st.integers(1, 5),
)
def test_budget_is_never_exceeded(
    steps: list[tuple[float, float, float, bool]], per_minute: int
) -> None:
    config = RouterConfig(threshold=0.5, explore=0.2, per_minute=per_minute, window=16, warmup=4)
    state = RouterState.initial(config)
    now, times = 0.0, []
    for gap, signal, draw, agreed in steps:
        now += gap
        decision = decide(state, sig(signal), now=now, rng_draw=draw)
        state = observe(state, Routed(decision, now))
        if decision.escalate:
            times.append(now)
            state = observe(state, HubAnswered(decision, agreed, 10.0))
    # Token bucket: any interval of length T holds at most capacity + rate * T escalations.
    rate = per_minute / 60.0
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= per_minute + rate * (times[j] - start) + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.integers(0, 50), st.booleans())
def test_decisions_are_deterministic(signal: float, draw: float, warm: int, agreed: bool) -> None:
    def run() -> tuple[object, RouterState]:
        state = RouterState.initial(RouterConfig(threshold=0.5, target_miss_rate=0.01, warmup=8))
        for i in range(warm):
            d = decide(state, sig((i * 0.37) % 1), now=float(i), rng_draw=(i * 0.61) % 1)
            state = observe(observe(state, Routed(d, float(i))), HubAnswered(d, agreed, 5.0))
        return decide(state, sig(signal), now=99.0, rng_draw=draw), state

    assert run() == run()


def _stream(config: RouterConfig, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    state = RouterState.initial(config)
    escalated = 0
    for i in range(n):
        d = decide(state, sig(float(rng.beta(5, 1))), now=float(i), rng_draw=float(rng.random()))
        state = observe(state, Routed(d, float(i)))
        if i >= n // 2:
            escalated += d.escalate
    return escalated / (n - n // 2)


@settings(max_examples=5, deadline=None)
@given(st.floats(0.05, 0.6), st.integers(0, 1000))
def test_stationary_escalation_rate_converges_to_the_target(target: float, seed: int) -> None:
    # The prior threshold is deliberately wrong: the window quantile takes over after warm-up.
    config = RouterConfig(threshold=0.01, target_rate=target, explore=0.02, window=512)
    assert _stream(config, 3000, seed) == pytest.approx(target, abs=0.04)


def test_explored_misses_raise_the_escalation_rate() -> None:
    config = RouterConfig(threshold=0.5, target_rate=0.1, target_miss_rate=0.01, explore=0.1)
    state = RouterState.initial(config)
    d = decide(state, sig(0.9), now=0, rng_draw=0.0)
    assert d.reason is Reason.EXPLORE
    missed = observe(state, HubAnswered(d, agreed=False, latency_ms=5))
    agreed = observe(state, HubAnswered(d, agreed=True, latency_ms=5))
    assert missed.rate == pytest.approx(0.1 + config.rate_step / 0.1)
    assert agreed.rate == pytest.approx(0.1)
    quiet = observe(state, Routed(decide(state, sig(0.9), now=0, rng_draw=0.9), 0))
    assert quiet.rate < 0.1


@given(st.floats(0, 100), st.floats(-10, 100))
def test_token_bucket_never_goes_negative_nor_overfills(start: float, later: float) -> None:
    bucket = TokenBucket.full(3, 60.0, now=start)
    for _ in range(5):
        bucket = bucket.spend(start)
    assert bucket.tokens == 0.0
    assert 0.0 <= bucket.at(start + later).tokens <= 3.0


def test_calibration_targets() -> None:
    n = 100
    y = np.zeros(n, np.int64)
    scores = np.linspace(0, 1, n)
    edge = np.where(scores < 0.2, 1, 0)  # wrong on the 20 least confident
    hub = np.zeros(n, np.int64)
    match = calibrate_threshold(scores, edge, hub, y, signal="margin")
    assert match.expected_escalation_rate == pytest.approx(0.2)
    assert match.expected_accuracy == 1.0
    acc = calibrate_threshold(
        scores, edge, hub, y, signal="margin", target="accuracy", target_value=0.9
    )
    assert acc.expected_escalation_rate == pytest.approx(0.1)
    budget = calibrate_threshold(
        scores, edge, hub, y, signal="margin", target="escalation_budget", target_value=0.05
    )
    assert budget.expected_escalation_rate == pytest.approx(0.05)
    assert budget.target == "escalation_budget"
    assert miss_rate(scores, edge, hub, budget.threshold) == pytest.approx(0.15)
