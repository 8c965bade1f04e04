"""The online router streamed over the test split in order, from the calibrated prior."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_agent.router import (
    HubAnswered,
    Routed,
    RouterConfig,
    RouterState,
    Signals,
    decide,
    observe,
)

ARRIVAL_S = 0.1  # one input every 100 ms of simulated time (no budgets are set here)


def stream(
    config: RouterConfig,
    signals: dict[str, NDArray[np.float64]],
    agreed: NDArray[np.bool_],
    hub_latency_ms: NDArray[np.floating],
    seed: int,
) -> NDArray[np.bool_]:
    """Escalation mask of the online router over the inputs in order."""
    n = len(agreed)
    draws = np.random.default_rng(seed).random(n)
    state = RouterState.initial(config)
    escalated = np.zeros(n, dtype=bool)
    mp, mg, ne = signals["max_probability"], signals["margin"], signals["neg_entropy"]
    learned = signals.get("learned")
    for i in range(n):
        now = i * ARRIVAL_S
        s = Signals(
            float(mp[i]),
            float(mg[i]),
            float(ne[i]),
            learned=None if learned is None else float(learned[i]),
        )
        d = decide(state, s, now=now, rng_draw=float(draws[i]))
        state = observe(state, Routed(d, now))
        if d.escalate:
            escalated[i] = True
            state = observe(state, HubAnswered(d, bool(agreed[i]), float(hub_latency_ms[i])))
    return escalated
