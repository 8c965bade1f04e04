"""The privacy benchmark's JSON report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttackerResult(_Model):
    attacker: str  # pseudo_inverse, ridge_decoder, mlp_decoder, knn_decoder
    relative_l2: float  # mean ||x^ - x|| / ||x|| over the victims (the test split)
    ssim: float  # mean structural similarity of x^ to x (1: identical)
    reidentified: float  # share of x^ nearest to their own x among all victims


class NoiseResult(_Model):
    """Gaussian noise added on the device to what it sends, sigma x the public embedding's
    per-coordinate standard deviation; the device's own head still sees the clean embedding."""

    sigma: float
    hub_accuracy: float
    cascade_accuracy: float
    accuracy_cost_pp: float  # cascade accuracy lost against sigma = 0, percentage points
    best_relative_l2: float  # the best attacker's (trained on equally noisy public data)
    best_ssim: float
    attribute_probe_accuracy: float


class RecipeResult(_Model):
    recipe: str  # the encoder kind the bundle was built with
    model_id: str
    embedding_dim: int
    wire_bytes: int  # float16 embedding on the wire
    edge_accuracy: float
    hub_accuracy: float
    cascade_accuracy: float
    escalation_rate: float
    attackers: list[AttackerResult]
    best_attacker: str  # lowest relative L2
    best_relative_l2: float
    best_ssim: float
    attribute_probe_accuracy: float  # chance is ~0.5
    noise: list[NoiseResult]


class RawResult(_Model):
    """Sending the raw input: everything is revealed."""

    wire_bytes: int  # float32 input
    relative_l2: float
    ssim: float
    attribute_probe_accuracy: float


class DatasetResult(_Model):
    dataset: str
    victims: int  # test inputs rebuilt
    public: int  # public inputs the attackers learned from
    raw: RawResult
    recipes: list[RecipeResult]
    # Target: a recipe whose best-attacker error is >= 3x the default (linear) recipe's, at
    # <= 0.5 pp cascade accuracy cost.
    private_recipe: str
    error_ratio: float  # private recipe's best relative L2 / the default recipe's
    accuracy_cost_pp: float  # default cascade accuracy - private cascade accuracy
    target_met: bool


class PrivacyReport(_Model):
    seed: int
    quick: bool
    datasets: list[DatasetResult]
    seconds: float
