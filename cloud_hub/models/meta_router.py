"""The meta-router: a contextual bandit over arms (sets of hub models), per request.

Model type, and why: one ridge regression per arm predicting "this arm's fused answer is
right" from [1, local max probability, margin, normalised entropy, the local probabilities,
the embedding / sqrt(dim)]. Linear because (a) a decision must cost little beside the models
it routes to: it is one [d] x [d, arms] product (measured: 10-20% of the batched time of this
project's 6-45 us hub models, above the 2% target; ~10 us at batch 1, mostly Python);
(b) ridge updates in closed form, one Sherman-Morrison step per observation, so the router
learns online without retraining batches as an MLP or gradient-boosted trees would need;
(c) the local probabilities already carry most of the signal (which class group, how
unsure), which a linear map reads well.

Exploration: epsilon-greedy at a stated rate (the bundle's, 5% by default): an explored
request runs every model, is answered by the arm predicted best, and every arm learns whether
its answer agreed with the consensus (majority of the arms' labels) — the hub never sees true
labels. Exploit: the best predicted arm within the budget, or the cheapest arm within
`tolerance` of it (accuracy per price: a cheaper arm that is predicted as good is chosen).

The warm start comes with the bundle (ridge statistics fitted on the calibration split's
hardest inputs, which are what devices escalate), so the router is useful from request one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from escalade_protocol.answer import RouteReason

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# Ridge penalty: the prior is fitted on a few hundred hard calibration inputs (digits: ~110)
# over ~45-80 features; a strong penalty keeps it near each arm's mean accuracy.
RIDGE = 10.0


def features(local: npt.NDArray[np.floating], embedding: npt.NDArray[np.floating]) -> F64:
    """The router's context, [n, d] (or [d] for one request)."""
    p = np.asarray(local, np.float64)
    e = np.asarray(embedding, np.float64)
    single = p.ndim == 1
    p, e = np.atleast_2d(p), np.atleast_2d(e)
    top2 = np.sort(p, axis=1)[:, -2:]
    entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1) / np.log(p.shape[1])
    x = np.hstack(
        [
            np.ones((len(p), 1)),
            top2[:, 1:],
            top2[:, 1:] - top2[:, :1],
            entropy[:, None],
            p,
            e / np.sqrt(e.shape[1]),
        ]
    )
    return x[0] if single else x


@dataclass(frozen=True, slots=True)
class RouterPrior:
    """Ridge statistics per arm: A = ridge I + X'X [arms, d, d], b = X'r [arms, d]."""

    gram: F64
    rewards: F64

    @classmethod
    def fit(cls, x: F64, correct: npt.NDArray[np.bool_]) -> RouterPrior:
        """x: [n, d] contexts; correct: [n, arms], whether each arm's answer was right."""
        gram = x.T @ x + RIDGE * np.eye(x.shape[1])
        rewards = correct.astype(np.float64).T @ x
        return cls(np.repeat(gram[None], correct.shape[1], axis=0), rewards)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, gram=self.gram, rewards=self.rewards)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RouterPrior:
        with np.load(io.BytesIO(data)) as z:
            return cls(np.asarray(z["gram"], np.float64), np.asarray(z["rewards"], np.float64))


@dataclass(frozen=True, slots=True)
class RouterSettings:
    exploration_rate: float = 0.05
    # A cheaper arm predicted within this much accuracy of the best is preferred (0: the
    # most accurate arm within the budget; the budget alone then bounds the cost).
    tolerance: float = 0.0
    # The request's budget: price per answer (unit of price_per_1k / 1000) and model time.
    max_price: float = float("inf")
    max_model_ms: float = float("inf")


@dataclass(frozen=True, slots=True)
class Choice:
    arm: int
    reason: RouteReason


class MetaRouter:
    def __init__(
        self,
        prior: RouterPrior,
        *,
        prices: F64,
        model_ms: F64,
        settings: RouterSettings,
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.prices = np.asarray(prices, np.float64)
        self.model_ms = np.asarray(model_ms, np.float64)
        self._inverse = np.linalg.inv(prior.gram)
        self._rewards = prior.rewards.copy()
        self._theta = np.einsum("kij,kj->ik", self._inverse, self._rewards)  # [d, arms]
        self._rng = np.random.default_rng(seed)
        self.eligible = (self.prices <= settings.max_price) & (
            self.model_ms <= settings.max_model_ms
        )
        if not self.eligible.any():  # nothing fits: the cheapest arm rather than no answer
            self.eligible[int(np.argmin(self.prices))] = True
        self._order = np.lexsort((self.model_ms, self.prices))  # cheapest first
        self.observed = 0

    @property
    def arms(self) -> int:
        return len(self.prices)

    def predict(self, x: F64) -> F64:
        """Predicted accuracy per arm: [arms] for one context, [n, arms] for many."""
        result: F64 = x @ self._theta
        return result

    def choose(self, x: F64, *, draw: float | None = None) -> Choice:
        """An arm for one context; `draw` in [0, 1) replaces the router's own random draw."""
        u = self._rng.random() if draw is None else draw
        predicted = self.predict(x)
        best = self._best_within_budget(predicted)
        if u < self.settings.exploration_rate:
            return Choice(best, RouteReason.EXPLORE)
        if not self.eligible[int(np.argmax(predicted))]:
            return Choice(best, RouteReason.OVER_BUDGET)
        floor = predicted[best] - self.settings.tolerance
        for arm in self._order:
            if self.eligible[arm] and predicted[arm] >= floor:
                if arm != best:
                    return Choice(int(arm), RouteReason.CHEAPEST_NEAR_BEST)
                break
        return Choice(best, RouteReason.PREDICTED_BEST)

    def choose_batch(self, x: F64) -> I64:
        """Exploit-only choices for many contexts at once (the bench's cost measurement)."""
        predicted = np.where(self.eligible, self.predict(x), -np.inf)
        best = predicted.max(axis=1, keepdims=True)
        near = predicted >= best - self.settings.tolerance
        ranked = np.argmax(near[:, self._order], axis=1)
        chosen: I64 = self._order[ranked]
        return chosen

    def _best_within_budget(self, predicted: F64) -> int:
        return int(np.argmax(np.where(self.eligible, predicted, -np.inf)))

    def update(self, x: F64, rewards: F64, arms: npt.NDArray[np.int64] | None = None) -> None:
        """Learn from one context: `rewards[k]` for each arm in `arms` (all by default)."""
        chosen = np.arange(self.arms) if arms is None else np.asarray(arms)
        for arm, reward in zip(chosen, np.asarray(rewards, np.float64), strict=True):
            inv = self._inverse[arm]
            v = inv @ x
            inv -= np.outer(v, v) / (1.0 + x @ v)
            self._rewards[arm] += reward * x
            self._theta[:, arm] = inv @ self._rewards[arm]
        self.observed += 1


def consensus(labels: I64) -> int:
    """The arms' majority label; ties go to the label of the arm listed last (the largest)."""
    values, counts = np.unique(labels, return_counts=True)
    top = values[counts == counts.max()]
    for label in labels[::-1]:
        if label in top:
            return int(label)
    return int(labels[-1])
