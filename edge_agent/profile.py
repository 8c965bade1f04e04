"""Firmware profiles: what kind of device this is and how to run models on it.

Profiles are data (TOML files in the `firmware_profiles` package); `detect` picks one for this
machine, `select_providers` keeps the profile's execution providers that ONNX Runtime offers
here, in the profile's order of preference.
"""

from __future__ import annotations

import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edge_agent.errors import ProfileError


@dataclass(frozen=True, slots=True)
class FirmwareProfile:
    name: str
    description: str
    arch: tuple[str, ...]
    execution_providers: tuple[str, ...]
    intra_op_threads: int

    @classmethod
    def from_toml(cls, text: str, *, source: str) -> FirmwareProfile:
        try:
            data = tomllib.loads(text)
            profile = cls(
                name=str(data["name"]),
                description=str(data.get("description", "")),
                arch=tuple(str(a) for a in data["arch"]),
                execution_providers=tuple(str(p) for p in data["execution_providers"]),
                intra_op_threads=int(data.get("intra_op_threads", 1)),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"invalid firmware profile {source}: {exc!r}") from exc
        if not profile.execution_providers:
            raise ProfileError(f"firmware profile {source} names no execution provider")
        return profile


def _builtin_files() -> dict[str, str]:
    root = resources.files("firmware_profiles")
    return {
        entry.name.removesuffix(".toml"): entry.read_text()
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }


def available_profiles() -> list[FirmwareProfile]:
    return [
        FirmwareProfile.from_toml(text, source=name)
        for name, text in sorted(_builtin_files().items())
    ]


def load_profile(name_or_path: str) -> FirmwareProfile:
    """A built-in profile by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return FirmwareProfile.from_toml(path.read_text(), source=str(path))
    builtin = _builtin_files()
    if name_or_path not in builtin:
        raise ProfileError(
            f"unknown firmware profile {name_or_path!r}; built-in: {', '.join(sorted(builtin))}"
        )
    return FirmwareProfile.from_toml(builtin[name_or_path], source=name_or_path)


def detect(available_providers: list[str], machine: str | None = None) -> FirmwareProfile:
    """The built-in profile for this CPU architecture whose preferred provider is present."""
    arch = (machine or platform.machine()).lower()
    candidates = [p for p in available_profiles() if arch in p.arch]
    # Accelerated profiles first: a CPU-only profile is the fallback, not the default.
    candidates.sort(key=lambda p: p.execution_providers[0] == "CPUExecutionProvider")
    for profile in candidates:
        if profile.execution_providers[0] in available_providers:
            return profile
    raise ProfileError(f"no built-in firmware profile matches architecture {arch!r}")


def select_providers(profile: FirmwareProfile, available: list[str]) -> list[str]:
    chosen = [p for p in profile.execution_providers if p in available]
    if not chosen:
        raise ProfileError(
            f"none of profile {profile.name}'s execution providers "
            f"({', '.join(profile.execution_providers)}) is available; "
            f"this ONNX Runtime offers {', '.join(available)}"
        )
    return chosen
