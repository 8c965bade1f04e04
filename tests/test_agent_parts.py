"""Agent parts that need no network: profiles, router, config, device key."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError, NotEnrolledError, ProfileError
from edge_agent.identity import DeviceIdentity, load_or_create_key
from edge_agent.profile import available_profiles, load_profile, select_providers
from edge_agent.router import Reason, decide


def test_builtin_profiles_load_and_include_x86_cpu() -> None:
    names = {p.name for p in available_profiles()}
    assert {
        "x86-64-cpu",
        "x86-64-nvidia",
        "jetson-orin-nano",
        "jetson-agx-orin",
        "jetson-nano",
        "raspberry-pi-4",
        "raspberry-pi-5",
        "aarch64-cpu",
        "armv7-cpu",
    } <= names
    cpu = load_profile("x86-64-cpu")
    assert cpu.execution_providers == ("CPUExecutionProvider",)


def test_select_providers_keeps_profile_order_and_falls_back() -> None:
    jetson = load_profile("jetson-orin-nano")
    assert select_providers(jetson, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(jetson, ["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    with pytest.raises(ProfileError, match="none of profile"):
        select_providers(load_profile("x86-64-cpu"), ["CUDAExecutionProvider"])


def test_profile_from_a_file_and_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text(
        'name = "mine"\n[detect]\narch = ["x86_64"]\n[hardware]\ncpu = "x86"\n'
        '[[providers]]\nname = "CPUExecutionProvider"\n'
    )
    assert load_profile(str(good)).name == "mine"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n')
    with pytest.raises(ProfileError, match="invalid firmware profile"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="unknown firmware profile"):
        load_profile("no-such-device")


@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12),
    st.floats(0.0, 1.0),
)
def test_router_escalates_exactly_below_the_threshold(
    values: list[float], threshold: float
) -> None:
    probabilities = np.asarray(values, dtype=np.float32)
    decision = decide(probabilities, threshold=threshold, route="auto")
    assert decision.escalate == (float(probabilities.max()) < threshold)
    assert decision.reason is (Reason.UNCERTAIN if decision.escalate else Reason.CONFIDENT)
    assert decide(probabilities, threshold=threshold, route="local").escalate is False
    assert decide(probabilities, threshold=threshold, route="hub").escalate is True


def test_device_key_is_private_and_refused_when_exposed(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / "device.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path).private_bytes_raw() == key.private_bytes_raw()
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_unenrolled_device_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolledError, match="edge-agent enroll"):
        DeviceIdentity.load(tmp_path)


def test_config_file_flags_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('data_dir = "/d"\nmodels_dir = "/m"\nallow_simulated_tee = true\nport = 9000\n')
    config = AgentConfig.load(path, {"port": 9100})
    assert config.allow_simulated_tee is True
    assert config.port == 9100
    assert config.data_dir == Path("/d")
    assert (
        AgentConfig.load(None, {"data_dir": "/d", "models_dir": "/m"}).allow_simulated_tee is False
    )
    path.write_text('data_dir = "/d"\nmodels_dir = "/m"\nalow_simulated_tee = true\n')
    with pytest.raises(AgentError, match="alow_simulated_tee"):
        AgentConfig.load(path, {})


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("attestation", {"AppraisalPolicy", "appraise", "report_data", "SimulatedAttester"}),
        ("escalade_protocol", {"seal", "parse", "Tensor", "ErrorCode", "ProtocolError"}),
        ("cloud_hub", {"HubConfig", "make_app", "EscalationPipeline"}),
        (
            "edge_agent",
            {"AgentConfig", "HubClient", "decide", "EdgeRuntime", "check_bundle", "Outbox"},
        ),
    ],
)
def test_public_api_exports_what_it_means_to(package: str, expected: set[str]) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert expected <= exported
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"
