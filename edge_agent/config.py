"""The agent's configuration, parsed once at the entry point into a strict, frozen model.

Sources, later ones winning: the TOML file, then ``ESCALADE_AGENT_<KEY>`` environment
variables, then command-line flags. Wrong types are errors (``port = "eighty"``,
``adaptive_router = "no"``), booleans are booleans, and an error names the key and where the
value came from.

Example ``agent.toml`` (`edge-agent init` writes one)::

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
    out_of_domain = "flag"              # or "refuse": inputs outside the bundle's domain
    api_token_file = "/etc/escalade-agent/api-token"   # optional bearer token for the local API
    allowed_origins = []                # browser origins allowed to call the local API
    graphs = ["graph/graph.toml"]       # task graphs served at /v2/models/<graph name>

    [attestation]                       # what hub evidence to trust (attestation.policy)
    mrenclave = ["<64 hex>"]            # from `gramine-sgx-sigstruct-view` (docs/enclave.md)
    accepted_tcb_statuses = ["UpToDate"]
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attestation import AppraisalPolicy, PolicyError
from edge_agent.errors import AgentError

ENV_PREFIX = "ESCALADE_AGENT_"
AUTO = "auto"
# The flag that sets each key, for error messages ("run needs --data-dir").
FLAGS = {
    "data_dir": "--data-dir",
    "models_dir": "--models",
    "hub_url": "--hub",
    "profile": "--profile",
    "host": "--host",
    "port": "--port",
    "threshold": "--threshold",
}


class ConfigError(AgentError):
    """The configuration is invalid: names the key, the source and the problem."""


class AgentConfig(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, arbitrary_types_allowed=True
    )

    data_dir: Path
    models_dir: Path
    # A URL (static: no discovery), "auto" (find hubs on the LAN over mDNS, attest each), or
    # unset: the hub this device enrolled with. `hub` is accepted as the key's short name.
    hub_url: str | None = None
    profile: str | None = None  # default: detect
    # Detection reads /proc and /etc under this root (tests fake a device's files).
    detect_root: Path = Path("/")
    detect_machine: str | None = None  # default: platform.machine()
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    allow_simulated_tee: bool = False
    # Override the router's calibrated threshold (the signal's scale: probabilities in [0, 1],
    # neg_entropy <= 0); None keeps the bundle's.
    threshold: float | None = Field(default=None, ge=-50.0, le=1.0)
    # Keep the escalation rate on target as inputs drift, learning from the hub's answers.
    # Off by default: on stationary benchmark streams it does not beat the calibrated
    # threshold yet (docs/benchmarks.md); turn it on where inputs are expected to drift.
    adaptive_router: bool = False
    explore: float = Field(default=0.02, ge=0.0, lt=1.0)
    escalations_per_minute: float | None = Field(default=None, gt=0)
    escalations_per_day: float | None = Field(default=None, gt=0)
    latency_budget_ms: float | None = Field(default=None, gt=0)
    hub_timeout_s: float = Field(default=5.0, gt=0, le=600)
    attestation_ttl_s: float = Field(default=3600.0, gt=0)
    # The weakest HPKE suite escalations may be sealed with: the agent uses the strongest its
    # hub offers, and refuses a hub offering nothing this strong (`suite_below_minimum`).
    min_hpke_suite: Literal["x25519", "mlkem768-x25519"] = "x25519"
    # Circuit breaker: first cooldown after a failure, doubled per failed probe up to the max.
    breaker_cooldown_s: float = Field(default=0.25, gt=0, le=600)
    breaker_max_cooldown_s: float = Field(default=5.0, gt=0, le=3600)
    announce_ready: bool = False
    # Inputs outside the bundle's domain: answered with out_of_domain = true, or refused (422).
    out_of_domain: Literal["flag", "refuse"] = "flag"
    # Keep embeddings the hub would refuse local (they count against the device's reputation).
    # false only to exercise the hub's own checks (tests, red-team runs).
    check_embedding_bands: bool = True
    # The local API: a bearer token (file mode 0600) and browser origins allowed to call it.
    api_token_file: Path | None = None
    allowed_origins: tuple[str, ...] = ()
    # Outbox of outcome records: size cap (the oldest undelivered are dropped, and counted).
    outbox_max_records: int = Field(default=100_000, ge=1)
    outbox_batch: int = Field(default=256, ge=1, le=4096)
    outbox_retry_s: float = Field(default=2.0, gt=0)
    # Audits: how long each escalated input (and its commitment's salt) is kept, encrypted, so
    # that it can be revealed if the hub audits that escalation (0 keeps nothing: then every
    # audit fails and the hub quarantines this device; see docs/provenance.md).
    audit_window_s: float = Field(default=600.0, ge=0, le=86_400)
    # Micro-batching of concurrent requests (Triton's dynamic batcher): 1 disables it. A wait of
    # 0 batches the requests that arrived in the same turn of the event loop (no added delay).
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_batch_wait_ms: float = Field(default=0.0, ge=0, le=100)
    # LAN discovery (mDNS, docs/discovery.md): interfaces by name (empty: the default one),
    # IPv6 besides IPv4, and whether this agent announces itself (profile, enrollment state).
    discovery_interfaces: tuple[str, ...] = ()
    discovery_ipv6: bool = False
    # Scale-out: how often the hub's signed replica list is fetched (its replicas join the
    # pool, each attested before use); 0 uses only the configured or discovered hubs.
    replica_refresh_s: float = Field(default=10.0, ge=0, le=3600)
    advertise: bool = True
    # How long `discover` and `enroll --hub auto` listen for hubs.
    discovery_timeout_s: float = Field(default=3.0, gt=0, le=300)
    # Signed bundle rollouts (docs/models.md): pinned release public keys (64 hex digits or
    # .pub files; empty: unsigned bundles accepted, with a warning), how often the agent
    # reports its model and learns its assignment (0: never), and how many first answers of a
    # new bundle are checked before the previous one is let go.
    release_keys: tuple[str, ...] = ()
    bundle_check_s: float = Field(default=30.0, ge=0, le=86_400)
    bundle_probation: int = Field(default=32, ge=0, le=100_000)
    # Task graphs served as KServe v2 models (docs/task-graphs.md): spec files, relative to
    # models_dir unless absolute; each is validated against the bundle when the agent starts.
    graphs: tuple[Path, ...] = ()
    # The appraisal policy for hub evidence, from [attestation] or --policy.
    policy: AppraisalPolicy = Field(default_factory=AppraisalPolicy, exclude=True)

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @field_validator("graphs")
    @classmethod
    def _graph_specs(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        if any(path.suffix != ".toml" for path in value):
            raise ValueError("graph specs are .toml files")
        if len(set(value)) != len(value):
            raise ValueError("a graph spec is listed twice")
        return value

    @classmethod
    def load(
        cls,
        path: Path | None,
        overrides: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        policy_file: Path | None = None,
    ) -> AgentConfig:
        """TOML file, then `env` (``ESCALADE_AGENT_*``), then `overrides` (flags, None: unset)."""
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        if path is not None:
            try:
                file_values = tomllib.loads(path.read_text())
            except OSError as exc:
                raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
            values.update(_aliased(file_values))
            source.update(dict.fromkeys(file_values, str(path)))
        for name, raw in (env or {}).items():
            if not name.startswith(ENV_PREFIX):
                continue
            key = name.removeprefix(ENV_PREFIX).lower()
            key = "hub_url" if key == "hub" else key
            values[key] = _from_env(key, raw)
            source[key] = name
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
                source[key] = FLAGS.get(key, "--" + key.replace("_", "-"))
        table = values.pop("attestation", {})
        base_dir = path.parent if path is not None else None
        policy = _policy(table, policy_file, base_dir=base_dir)
        for key in ("data_dir", "models_dir"):
            if key not in values:
                raise ConfigError(
                    f"config needs {key}: pass {FLAGS[key]}, set {ENV_PREFIX}{key.upper()} "
                    f"or {key} in the config file"
                )
        try:
            config = cls.model_validate_json(json.dumps(values, default=str))
        except ValidationError as exc:
            raise ConfigError(_describe(exc, source)) from None
        if config.breaker_max_cooldown_s < config.breaker_cooldown_s:
            raise ConfigError("breaker_max_cooldown_s must be >= breaker_cooldown_s")
        if config.allow_simulated_tee:
            policy = replace(policy, allow_simulated_tee=True)
        expanded = {
            "data_dir": config.data_dir.expanduser(),
            "models_dir": config.models_dir.expanduser(),
            "policy": policy,
        }
        return config.model_copy(update=expanded)

    @property
    def discovers(self) -> bool:
        """True when hubs are found on the LAN rather than named."""
        return self.hub_url == AUTO

    def api_token(self) -> bytes | None:
        """The local API's bearer token, read from `api_token_file` (which must be 0600)."""
        if self.api_token_file is None:
            return None
        path = self.api_token_file
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
            token = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read api_token_file {path}: {exc.strerror}") from None
        if len(token) < 16:
            raise ConfigError(f"api token in {path} is shorter than 16 bytes")
        return token


def _aliased(values: dict[str, Any]) -> dict[str, Any]:
    """``hub`` is the short name of ``hub_url`` (``hub = "auto"``)."""
    if "hub" in values:
        values["hub_url"] = values.pop("hub")
    return values


def _accepts_str(key: str) -> bool:
    field = AgentConfig.model_fields.get(key)
    if field is None:
        return False
    annotation = field.annotation
    return annotation in (str, Path) or bool({str, Path} & set(get_args(annotation)))


def _from_env(key: str, raw: str) -> object:
    """Text fields keep the text; others parse as a TOML value (so ``true``, ``8780``)."""
    if _accepts_str(key):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # validation then says what the key expects


def _describe(exc: ValidationError, source: Mapping[str, str]) -> str:
    problems = []
    for err in exc.errors()[:3]:
        key = ".".join(str(p) for p in err["loc"]) or "config"
        top = str(err["loc"][0]) if err["loc"] else ""
        where = f" (from {source[top]})" if top in source else ""
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key}{where}")
        else:
            problems.append(f"{key}{where}: {err['msg']}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "invalid config: " + "; ".join(problems) + more


def _policy(table: object, policy_file: Path | None, *, base_dir: Path | None) -> AppraisalPolicy:
    try:
        if policy_file is not None:
            return AppraisalPolicy.load(policy_file)
        if not isinstance(table, dict):
            raise ConfigError("[attestation] must be a table")
        return AppraisalPolicy.from_mapping(table, base_dir=base_dir)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from exc
