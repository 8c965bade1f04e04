"""The agent's configuration: a TOML file and command-line flags, parsed once, then frozen.

Example ``agent.toml``::

    data_dir = "/var/lib/escalade-agent"
    models_dir = "/opt/escalade/models/digits"
    profile = "raspberry-pi-4"          # or a path to a .toml profile; default: detect
    host = "127.0.0.1"
    port = 8780
    allow_simulated_tee = false         # INSECURE relaxation, development only
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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
    # Override the router's calibrated threshold (0..1); None keeps the bundle's.
    threshold: float | None = None
    hub_timeout_s: float = 5.0
    attestation_ttl_s: float = 3600.0
    announce_ready: bool = False

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values.update(tomllib.loads(path.read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise AgentError(f"cannot read config {path}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AgentError(f"unknown config keys: {', '.join(unknown)}")
        for key in ("data_dir", "models_dir"):
            if key not in values:
                raise AgentError(f"config needs {key}")
            values[key] = Path(values[key]).expanduser()
        threshold = values.get("threshold")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise AgentError("threshold must be between 0 and 1")
        return cls(**values)
