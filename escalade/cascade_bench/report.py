"""What `run_cascade_bench` returns (pydantic, so it serialises to JSON as is)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Estimate(_Model):
    """Mean over seeds, with a 95% paired-bootstrap interval (resampling test inputs)."""

    mean: float
    low: float
    high: float


class PolicyResult(_Model):
    name: str
    # How the operating point was chosen (e.g. "calibrated: match hub-only accuracy").
    operating_point: str
    accuracy: Estimate
    delta_vs_edge: Estimate
    delta_vs_hub: Estimate
    escalation_rate: Estimate
    apgr: Estimate | None
    cpt50: Estimate | None
    cpt80: Estimate | None
    cpt95: Estimate | None
    bytes_per_input: float
    # Raw upload bytes / this policy's bytes per input; None when it sends nothing.
    bytes_reduction_vs_raw: float | None
    latency_mean_ms: float
    latency_p95_ms: float
    cost_per_1k: float


class OnlineComparison(_Model):
    """The online router against the fixed calibrated threshold after the warm-up inputs."""

    warmup_inputs: int
    online_accuracy: float
    online_escalation_rate: float
    fixed_accuracy: float
    fixed_escalation_rate: float
    # Accuracy of the fixed-threshold curve at the online router's escalation rate.
    fixed_curve_accuracy_at_online_rate: float


class Wire(_Model):
    embedding_envelope_bytes: int
    raw_envelope_bytes: int
    raw_encoding: str


class Timings(_Model):
    """Median onnxruntime time per single input on this machine (one thread), microseconds."""

    encoder_us: float
    head_us: float
    hub_us: float


class Target(_Model):
    name: str
    goal: str
    measured: str
    met: bool


class NetworkPolicy(_Model):
    """A policy of the model network at the bench's escalation mask (mean over seeds)."""

    name: str
    accuracy: float
    # Paired bootstrap over test inputs, mean over seeds: this policy minus hub-only.
    delta_vs_hub: Estimate
    delta_vs_monolith: float
    escalation_rate: float
    cost_per_1k: float
    cost_vs_monolith: float  # ratio - 1 (negative: cheaper)
    latency_mean_ms: float
    latency_vs_monolith: float


class NetworkReport(_Model):
    escalation_budget: float
    hub_only_accuracy: float
    monolith: str
    monolith_accuracy: float
    monolith_cost_per_1k: float
    monolith_latency_ms: float
    # name -> (declared price per 1000 inputs, measured ms per input at batch 1)
    model_costs: dict[str, tuple[float, float]]
    policies: list[NetworkPolicy]
    router_regret_pp: list[float]  # per seed, vs the best fixed arm after warm-up
    router_best_fixed: list[str]
    router_explored: list[float]
    router_cost_share_batched: list[float]
    router_cost_share_single: list[float]
    article: str


class CascadeReport(_Model):
    dataset: str
    seeds: list[int]
    test_inputs: int  # per seed
    bootstrap_resamples: int
    rtt_ms: float
    uplink_mbps: float
    hub_price: float
    edge_accuracy: Estimate
    hub_accuracy: Estimate
    wire: Wire
    timings: Timings
    policies: list[PolicyResult]
    online: list[OnlineComparison]  # one per seed
    targets: list[Target]
    # Mean accuracy over seeds on an escalation-rate grid, per policy (for the plot).
    curve_rates: list[float]
    curves: dict[str, list[float]]
    # (escalation rate, accuracy) of each policy's operating point, mean over seeds.
    points: dict[str, tuple[float, float]]
    seconds: float
    # The hub's model network (bench cascade --network): fusion and multi-model policies.
    network: NetworkReport | None = None
