"""Firmware profiles: what kind of device this is and how to run models on it.

Profiles are data: one TOML file per device kind in the `firmware_profiles` package, checked
against a strict schema when loaded (an error names the file, the key and the problem).

`detect(host, ...)` picks the most specific profile whose rules match the facts read from the
machine's files (`read_host(root)`): the CPU architecture, the text of
``/proc/device-tree/model``, the L4T release in ``/etc/nv_tegra_release`` and the presence of
files such as ``/proc/driver/nvidia/version``. All files are read under a configurable root, so
tests fake a Raspberry Pi's or a Jetson's files on any machine.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import ProfileError

log = logging.getLogger("edge_agent.profile")

CPU_PROVIDER = "CPUExecutionProvider"
ProviderOption = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class DetectRules(_Strict):
    """All non-empty rule groups must match; within a group, any entry matches."""

    arch: tuple[str, ...] = Field(min_length=1)
    # Substrings of /proc/device-tree/model.
    device_tree_model: tuple[str, ...] = ()
    # Prefixes of the release in /etc/nv_tegra_release ("R35" matches "# R35 (release), ...").
    l4t_release: tuple[str, ...] = ()
    # Paths relative to the filesystem root, any of which must exist.
    files: tuple[str, ...] = ()

    @property
    def specificity(self) -> int:
        return sum(bool(g) for g in (self.device_tree_model, self.l4t_release, self.files))


class Hardware(_Strict):
    """Facts about the device kind; each file says their source in a comment."""

    cpu: str
    accelerator: str = "none"
    memory_gb: tuple[int, ...] = ()
    # The vendor's peak figure (usually INT8 with sparsity): a label, never a measurement.
    vendor_peak_tops: float | None = Field(default=None, ge=0)


class RuntimeSettings(_Strict):
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    memory_cap_mb: int = Field(default=1024, ge=16)


class ProviderSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z]+ExecutionProvider$")
    options: dict[str, ProviderOption] = Field(default_factory=dict)


class RouterDefaults(_Strict):
    latency_budget_ms: float | None = Field(default=None, gt=0)


class FirmwareProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    detect: DetectRules
    hardware: Hardware
    runtime: RuntimeSettings = RuntimeSettings()
    providers: tuple[ProviderSpec, ...] = Field(min_length=1)
    router: RouterDefaults = RouterDefaults()

    @property
    def execution_providers(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.providers)

    @property
    def intra_op_threads(self) -> int:
        return self.runtime.intra_op_threads

    @classmethod
    def from_toml(cls, text: str, *, source: str) -> FirmwareProfile:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"firmware profile {source}: not valid TOML: {exc}") from None
        try:
            # JSON mode: strict about types (no "1" for 1, no "no" for false) while TOML arrays
            # still become tuples.
            return cls.model_validate_json(json.dumps(data))
        except TypeError as exc:
            raise ProfileError(f"invalid firmware profile {source}: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ProfileError(
                f"invalid firmware profile {source}: {key}: {first['msg']}{more}"
            ) from None


def _builtin_files() -> dict[str, str]:
    root = resources.files("firmware_profiles")
    return {
        entry.name.removesuffix(".toml"): entry.read_text()
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }


def available_profiles() -> list[FirmwareProfile]:
    return [
        FirmwareProfile.from_toml(text, source=f"firmware_profiles/{name}.toml")
        for name, text in sorted(_builtin_files().items())
    ]


def load_profile(name_or_path: str) -> FirmwareProfile:
    """A built-in profile by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProfileError(f"cannot read firmware profile {path}: {exc.strerror}") from None
        return FirmwareProfile.from_toml(text, source=str(path))
    builtin = _builtin_files()
    if name_or_path not in builtin:
        raise ProfileError(
            f"unknown firmware profile {name_or_path!r}; built-in: {', '.join(sorted(builtin))}"
        )
    return FirmwareProfile.from_toml(
        builtin[name_or_path], source=f"firmware_profiles/{name_or_path}.toml"
    )


# --- detection -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostFacts:
    arch: str
    device_tree_model: str | None
    l4t_release: str | None
    root: Path


_L4T = re.compile(r"#\s*(R\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def read_host(root: Path = Path("/"), *, machine: str | None = None) -> HostFacts:
    """What detection looks at, read from files under `root` (the machine: ``/``)."""
    model = _read_text(root / "proc/device-tree/model")
    release = _read_text(root / "etc/nv_tegra_release")
    l4t = None
    if release is not None:
        match = _L4T.search(release)
        l4t = f"{match.group(1)}.{match.group(2)}" if match else release.strip()[:40]
    return HostFacts(
        arch=(machine or platform.machine()).lower(),
        device_tree_model=model.replace("\x00", "").strip() if model is not None else None,
        l4t_release=l4t,
        root=root,
    )


@dataclass(frozen=True, slots=True)
class Detection:
    profile: FirmwareProfile
    # Why this profile: one line per matched rule, for `edge-agent doctor`.
    why: tuple[str, ...]


def _matches(rules: DetectRules, host: HostFacts) -> list[str] | None:
    if host.arch not in rules.arch:
        return None
    why = [f"architecture {host.arch}"]
    if rules.device_tree_model:
        model = host.device_tree_model or ""
        hit = next((m for m in rules.device_tree_model if m in model), None)
        if hit is None:
            return None
        why.append(f"/proc/device-tree/model {model!r} contains {hit!r}")
    if rules.l4t_release:
        release = host.l4t_release or ""
        hit = next((r for r in rules.l4t_release if release.startswith(r)), None)
        if hit is None:
            return None
        why.append(f"/etc/nv_tegra_release is L4T {release}")
    if rules.files:
        hit = next((f for f in rules.files if (host.root / f).exists()), None)
        if hit is None:
            return None
        why.append(f"/{hit} exists")
    return why


def detect(host: HostFacts, profiles: Iterable[FirmwareProfile] | None = None) -> Detection:
    """The most specific profile whose rules all match `host` (board rules beat arch alone)."""
    matched = []
    for profile in profiles if profiles is not None else available_profiles():
        why = _matches(profile.detect, host)
        if why is not None:
            matched.append((profile.detect.specificity, profile.name, profile, why))
    if not matched:
        raise ProfileError(
            f"no firmware profile matches this machine (architecture {host.arch!r}, "
            f"device-tree model {host.device_tree_model!r}); pass --profile NAME or a .toml file"
        )
    matched.sort(key=lambda m: (-m[0], m[1]))
    _, _, profile, why = matched[0]
    return Detection(profile, tuple(why))


# --- execution providers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    names: tuple[str, ...]
    options: tuple[dict[str, str], ...]
    # Providers the profile asks for that this ONNX Runtime lacks (one log line says so).
    missing: tuple[str, ...]


def _option(value: ProviderOption, substitutions: Mapping[str, str]) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value.format_map(dict(substitutions))
    return str(value)


def plan_providers(
    profile: FirmwareProfile, available: Iterable[str], *, data_dir: Path | None = None
) -> ProviderPlan:
    """The profile's providers that this ONNX Runtime offers, in order, with their options.

    ``{data_dir}`` in an option (the TensorRT engine cache) becomes the agent's state folder.
    """
    offered = set(available)
    subs = {"data_dir": str(data_dir) if data_dir is not None else "."}
    chosen = [p for p in profile.providers if p.name in offered]
    missing = tuple(p.name for p in profile.providers if p.name not in offered)
    if not chosen:
        raise ProfileError(
            f"none of profile {profile.name}'s execution providers "
            f"({', '.join(profile.execution_providers)}) is available; "
            f"this ONNX Runtime offers {', '.join(sorted(offered))}"
        )
    if missing:
        log.warning(
            "profile %s: this ONNX Runtime lacks %s; falling back to %s",
            profile.name,
            ", ".join(missing),
            ", ".join(p.name for p in chosen),
        )
    return ProviderPlan(
        names=tuple(p.name for p in chosen),
        options=tuple({k: _option(v, subs) for k, v in p.options.items()} for p in chosen),
        missing=missing,
    )


def select_providers(profile: FirmwareProfile, available: list[str]) -> list[str]:
    return list(plan_providers(profile, available).names)
