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
