"""The agent's configuration: a TOML file and command-line flags, parsed once, then frozen.

Example ``agent.toml``::

    data_dir = "/var/lib/escalade-agent"
    models_dir = "/opt/escalade/models/digits"
    profile = "raspberry-pi-4"          # or a path to a .toml profile; default: detect
    host = "127.0.0.1"
    port = 8780
    allow_simulated_tee = false         # INSECURE relaxation, development only
    escalations_per_minute = 60         # budgets (token buckets); unset: no limit
    escalations_per_day = 20000
    latency_budget_ms = 250             # answer locally while the hub's recent p95 is higher
    adaptive_router = false             # true: follow drift, learning from the hub's answers
    explore = 0.02                      # share of confident inputs escalated to keep learning

    [attestation]                       # what hub evidence to trust (attestation.policy)
    mrenclave = ["<64 hex>"]            # from `gramine-sgx-sigstruct-view` (docs/enclave.md)
    accepted_tcb_statuses = ["UpToDate"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from attestation import AppraisalPolicy, PolicyError
from edge_agent.errors import AgentError


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    data_dir: Path
    models_dir: Path
    hub_url: str | None = None  # default: the hub this device enrolled with
    profile: str | None = None  # default: detect
    host: str = "127.0.0.1"
    port: int = 8780
    allow_simulated_tee: bool = False
    # Override the router's calibrated threshold; None keeps the bundle's.
    threshold: float | None = None
    # Keep the escalation rate on target as inputs drift, learning from the hub's answers.
    # Off by default: on stationary benchmark streams it does not beat the calibrated
    # threshold yet (docs/benchmarks.md); turn it on where inputs are expected to drift.
    adaptive_router: bool = False
    # Share of confident inputs escalated anyway, so the router also learns where it is sure.
    explore: float = 0.02
    # Budgets: escalations per minute / per day (token buckets), and the hub's recent p95
    # latency beyond which the agent answers locally. None: no limit.
    escalations_per_minute: float | None = None
    escalations_per_day: float | None = None
    latency_budget_ms: float | None = None
    hub_timeout_s: float = 5.0
    attestation_ttl_s: float = 3600.0
    announce_ready: bool = False
    # The appraisal policy for hub evidence; `allow_simulated_tee` above is folded into it.
    policy: AppraisalPolicy = field(default_factory=AppraisalPolicy)

    @classmethod
    def load(
        cls, path: Path | None, overrides: dict[str, Any], *, policy_file: Path | None = None
    ) -> AgentConfig:
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values.update(tomllib.loads(path.read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise AgentError(f"cannot read config {path}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        table = values.pop("attestation", {})
        policy = _policy(table, policy_file, base_dir=path.parent if path is not None else None)
        if values.get("allow_simulated_tee"):
            policy = replace(policy, allow_simulated_tee=True)
        values["policy"] = policy
        _validate(values, known={f.name for f in fields(cls)})
        return cls(**values)


def _policy(table: object, policy_file: Path | None, *, base_dir: Path | None) -> AppraisalPolicy:
    try:
        if policy_file is not None:
            return AppraisalPolicy.load(policy_file)
        if not isinstance(table, dict):
            raise AgentError("[attestation] must be a table")
        return AppraisalPolicy.from_mapping(table, base_dir=base_dir)
    except PolicyError as exc:
        raise AgentError(str(exc)) from exc


def _validate(values: dict[str, Any], *, known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise AgentError(f"unknown config keys: {', '.join(unknown)}")
    for key in ("data_dir", "models_dir"):
        if key not in values:
            raise AgentError(f"config needs {key}")
        values[key] = Path(values[key]).expanduser()
    if not 0.0 <= float(values.get("explore", 0.02)) < 1.0:
        raise AgentError("explore must be in [0, 1)")
    for key in ("escalations_per_minute", "escalations_per_day", "latency_budget_ms"):
        if values.get(key) is not None and float(values[key]) <= 0:
            raise AgentError(f"{key} must be positive")
