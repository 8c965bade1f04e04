"""The hub's model network: several models, a meta-router choosing among them, fusion with the
device's own probabilities (docs/model-network.md).

    fusion        log-linear pooling, specialists expanded to every class (pure numpy)
    meta_router   the contextual bandit that picks an arm per request (pure numpy)
    registry      the bundle's hub models as ONNX Runtime sessions, with cost and latency
    network       the three together: plan a request, fuse what the models said, cost it
"""

from cloud_hub.models.fusion import expand_specialist, fit_pooling_weights, pool
from cloud_hub.models.meta_router import MetaRouter, RouterPrior, RouterSettings, features
from cloud_hub.models.network import ModelNetwork, NetworkAnswer, Plan, Routed
from cloud_hub.models.registry import HubModels, RegisteredModel, select_models

__all__ = [
    "HubModels",
    "MetaRouter",
    "ModelNetwork",
    "NetworkAnswer",
    "Plan",
    "RegisteredModel",
    "Routed",
    "RouterPrior",
    "RouterSettings",
    "expand_specialist",
    "features",
    "fit_pooling_weights",
    "pool",
    "select_models",
]
