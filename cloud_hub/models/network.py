"""`ModelNetwork`: plan a request (which models, why), fuse what they said, cost the answer.

Pure over the models' outputs: the service runs the planned models (one batcher each) between
`plan` and `answer`, so this module never waits on anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloud_hub.models.fusion import SPECIALIST_SLOT, expand_specialist, pool
from cloud_hub.models.meta_router import (
    MetaRouter,
    RouterPrior,
    RouterSettings,
    consensus,
    features,
)
from cloud_hub.models.registry import HubModels
from escalade_protocol.answer import FusionKind, RouteReason
from escalade_protocol.artifacts import NetworkArm

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
GENERALIST = "generalist"


@dataclass(frozen=True, slots=True)
class Plan:
    arm: int
    reason: RouteReason
    # The models to run (every model when exploring), and those the answer uses.
    run: tuple[str, ...]
    answer_models: tuple[str, ...]
    context: F64


@dataclass(frozen=True, slots=True)
class Routed:
    """What the hub ran for one request, as its answer reports it."""

    models: tuple[str, ...]
    reason: RouteReason
    fusion: FusionKind
    # Hub model time (the models' measured latencies, summed) and declared price.
    model_us: int
    price: float


@dataclass(frozen=True, slots=True)
class NetworkAnswer:
    probabilities: F32
    routed: Routed


class ModelNetwork:
    def __init__(
        self,
        models: HubModels,
        prior: RouterPrior,
        settings: RouterSettings,
        *,
        prior_arms: Sequence[str],
        seed: int = 0,
    ) -> None:
        """`prior_arms`: the arm names the prior's rows stand for (the bundle's arms, in order);
        the router keeps the rows of the arms served (those the selected models allow)."""
        self.models = models
        self.arms = models.arms
        rows = [list(prior_arms).index(a.name) for a in self.arms]
        self.router = MetaRouter(
            RouterPrior(prior.gram[rows], prior.rewards[rows]),
            prices=np.asarray([models.arm_price(a) for a in self.arms]),
            model_ms=np.asarray([models.arm_model_ms(a) for a in self.arms]),
            settings=settings,
            seed=seed,
        )

    def plan(self, embedding: F32, local: F32) -> Plan:
        context = features(local, embedding)
        choice = self.router.choose(context)
        answer_models = self.models.resolve(self.arms[choice.arm], local)
        if choice.reason is RouteReason.EXPLORE:
            run = tuple(dict.fromkeys(m for a in self.arms for m in self.models.resolve(a, local)))
        else:
            run = answer_models
        return Plan(choice.arm, choice.reason, run, answer_models, context)

    def fused(self, arm: NetworkArm, local: F32, outputs: dict[str, F32]) -> F64:
        """The arm's answer: its models' outputs pooled with the local probabilities."""
        sources: list[npt.NDArray[np.floating]] = [local]
        for name in self.models.resolve(arm, local):
            model = self.models.models[name]
            out = outputs[name]
            if model.entry.kind == "specialist":
                sources.append(expand_specialist(out, model.entry.classes, local))
            else:
                sources.append(out)
        return pool(sources, arm.weights)

    def answer(self, plan: Plan, local: F32, outputs: dict[str, F32]) -> NetworkAnswer:
        probabilities = self.fused(self.arms[plan.arm], local, outputs)
        if plan.reason is RouteReason.EXPLORE:
            self._learn(plan, local, outputs)
        return NetworkAnswer(
            probabilities.astype(np.float32),
            Routed(
                models=plan.answer_models,
                reason=plan.reason,
                fusion=FusionKind.LOG_LINEAR,
                model_us=round(self.models.model_ms(plan.run) * 1000),
                price=self.models.price(plan.run),
            ),
        )

    def _learn(self, plan: Plan, local: F32, outputs: dict[str, F32]) -> None:
        """Every arm learns whether its answer agreed with the arms' consensus."""
        labels = np.asarray([int(np.argmax(self.fused(a, local, outputs))) for a in self.arms])
        agreed = labels == consensus(labels)
        self.router.update(plan.context, agreed.astype(np.float64))


__all__ = ["GENERALIST", "SPECIALIST_SLOT", "ModelNetwork", "NetworkAnswer", "Plan", "Routed"]
