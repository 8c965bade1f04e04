"""Setting a device up: profile detection from (faked) device files, strict config, the CLI's
init / install-service / errors, the systemd unit and sd_notify."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.errors import ProfileError
from edge_agent.profile import FirmwareProfile, detect, load_profile, plan_providers, read_host
from edge_agent.service import notify, render_unit

JETSON_ORIN_RELEASE = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64"
)
JETSON_NANO_RELEASE = (
    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64"
)


def fake_device(root: Path, *, model: str | None, release: str | None = None) -> Path:
    if model is not None:
        (root / "proc/device-tree").mkdir(parents=True)
        # The kernel's file ends in a NUL byte.
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if release is not None:
        (root / "etc").mkdir(parents=True)
        (root / "etc/nv_tegra_release").write_text(release + "\n")
    return root


@pytest.mark.parametrize(
    ("machine", "model", "release", "expected"),
    [
        ("aarch64", "Raspberry Pi 4 Model B Rev 1.4", None, "raspberry-pi-4"),
        ("aarch64", "Raspberry Pi 5 Model B Rev 1.0", None, "raspberry-pi-5"),
        (
            "aarch64",
            "NVIDIA Jetson Orin Nano Developer Kit",
            JETSON_ORIN_RELEASE,
            "jetson-orin-nano",
        ),
        ("aarch64", "Jetson AGX Orin", JETSON_ORIN_RELEASE, "jetson-agx-orin"),
        ("aarch64", "NVIDIA Jetson Nano Developer Kit", JETSON_NANO_RELEASE, "jetson-nano"),
        # A CPU-only aarch64 board that is no Pi: the generic profile, not "raspberry-pi-4".
        ("aarch64", "Pine64 RockPro64 v2.1", None, "aarch64-cpu"),
        ("aarch64", None, None, "aarch64-cpu"),
        ("armv7l", "Raspberry Pi 3 Model B Rev 1.2", None, "armv7-cpu"),
        ("x86_64", None, None, "x86-64-cpu"),
    ],
)
def test_detection_from_device_files(
    tmp_path: Path, machine: str, model: str | None, release: str | None, expected: str
) -> None:
    root = fake_device(tmp_path, model=model, release=release)
    detection = detect(read_host(root, machine=machine))
    assert detection.profile.name == expected
    assert detection.why[0] == f"architecture {machine}"
    if model is not None and expected not in {"aarch64-cpu", "armv7-cpu"}:
        assert any("device-tree" in line for line in detection.why)


def test_an_nvidia_driver_makes_an_x86_box_the_nvidia_profile(tmp_path: Path) -> None:
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia/version").write_text("NVRM version: 550.54\n")
    assert detect(read_host(tmp_path, machine="x86_64")).profile.name == "x86-64-nvidia"


def test_a_jetson_with_a_wrong_l4t_release_is_not_that_jetson(tmp_path: Path) -> None:
    root = fake_device(tmp_path, model="NVIDIA Jetson Orin Nano", release=JETSON_NANO_RELEASE)
    assert detect(read_host(root, machine="aarch64")).profile.name == "aarch64-cpu"
    with pytest.raises(ProfileError, match="riscv64"):
        detect(read_host(tmp_path, machine="riscv64"))


def test_a_bad_profile_names_file_key_and_problem(tmp_path: Path) -> None:
    text = load_profile.__globals__["_builtin_files"]()["raspberry-pi-4"]
    bad = tmp_path / "pi.toml"
    bad.write_text(text.replace("intra_op_threads = 4", 'intra_op_threads = "four"'))
    with pytest.raises(ProfileError) as caught:
        load_profile(str(bad))
    message = str(caught.value)
    assert str(bad) in message
    assert "runtime.intra_op_threads" in message
    assert "integer" in message
    with pytest.raises(ProfileError, match="providers"):
        FirmwareProfile.from_toml(text.replace('name = "CPUExecutionProvider"', ""), source="x")


def test_provider_plan_keeps_order_substitutes_the_cache_and_reports_missing(
    tmp_path: Path,
) -> None:
    plan = plan_providers(
        load_profile("jetson-agx-orin"),
        ["CPUExecutionProvider", "TensorrtExecutionProvider"],
        data_dir=tmp_path,
    )
    assert plan.names == ("TensorrtExecutionProvider", "CPUExecutionProvider")
    assert plan.missing == ("CUDAExecutionProvider",)
    assert plan.options[0]["trt_engine_cache_path"] == f"{tmp_path}/trt-engines"
    assert plan.options[0]["trt_fp16_enable"] == "True"


# --- config --------------------------------------------------------------------------------


def test_config_types_are_strict_and_errors_name_key_and_source(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    base = 'data_dir = "/d"\nmodels_dir = "/m"\n'
    for line, key in [
        ('port = "eighty"', "port"),
        ('adaptive_router = "no"', "adaptive_router"),
        ("port = 99999", "port"),
        ("threshold = 5.0", "threshold"),
        ("explore = true", "explore"),
    ]:
        path.write_text(base + line + "\n")
        with pytest.raises(ConfigError) as caught:
            AgentConfig.load(path, {})
        assert f"{key} (from {path})" in str(caught.value)
    path.write_text(base + "adaptive_router = true\nport = 9000\n")
    assert AgentConfig.load(path, {}).adaptive_router is True


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('data_dir = "/d"\nmodels_dir = "/m"\nport = 9000\nhost = "127.0.0.1"\n')
    env = {
        "ESCALADE_AGENT_PORT": "9100",
        "ESCALADE_AGENT_HOST": "0.0.0.0",
        "ESCALADE_AGENT_ADAPTIVE_ROUTER": "true",
        "OTHER": "ignored",
    }
    config = AgentConfig.load(path, {}, env=env)
    assert (config.port, config.host, config.adaptive_router) == (9100, "0.0.0.0", True)
    assert AgentConfig.load(path, {"port": 9200}, env=env).port == 9200
    with pytest.raises(ConfigError, match="ESCALADE_AGENT_ADAPTIVE_ROUTER"):
        AgentConfig.load(path, {}, env={"ESCALADE_AGENT_ADAPTIVE_ROUTER": "no"})
    with pytest.raises(ConfigError, match="--data-dir"):
        AgentConfig.load(None, {"models_dir": "/m"}, env={})


# --- CLI -----------------------------------------------------------------------------------


def test_init_detects_this_machine_and_a_faked_jetson(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data = tmp_path / "agent.toml", tmp_path / "state"
    argv = ["init", "--config", str(config), "--data-dir", str(data), "--models", "/m", "--json"]
    assert main([*argv, "--machine", "x86_64"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profile"] == "x86-64-cpu"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "device.key").stat().st_mode & 0o777 == 0o600
    assert AgentConfig.load(config, {}).profile == "x86-64-cpu"

    assert main(argv) == 2, "refuses to overwrite without --force"
    assert "--force" in capsys.readouterr().err
    root = fake_device(tmp_path / "jetson", model="Jetson AGX Orin", release=JETSON_ORIN_RELEASE)
    assert main([*argv, "--force", "--fs-root", str(root), "--machine", "aarch64"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profile"] == "jetson-agx-orin"
    assert any("L4T R35.4.1" in line for line in report["why"])


def run_cli(*argv: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALADE_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        input=stdin,
        env=env,
    )


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, bundle_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            (["run", "--models", str(bundle_dir)], "--data-dir"),
            (["run", "--port", "99999"], "port must be 0-65535"),
            (["run", "--threshold", "5"], "threshold must be"),
            (
                ["enroll", "--hub", "http://127.0.0.1:9", "--token", "hello", "--data-dir", "d"],
                "16-256",
            ),
            (
                [
                    "enroll",
                    "--hub",
                    "http://127.0.0.1:9",
                    "--token-file",
                    "nope",
                    "--data-dir",
                    "d",
                ],
                "token file",
            ),
            (
                ["init", "--profile", "no-such-board", "--config", "a.toml"],
                "unknown firmware profile",
            ),
        ]
        for argv, needle in cases:
            result = run_cli(*argv, cwd=tmp_path)
            assert result.returncode == 2, (argv, result.stderr)
            assert needle in result.stderr, (argv, result.stderr)
            assert "Traceback" not in result.stderr
        # A device that is set up but whose port is taken: one line naming host and port.
        data = tmp_path / "agent"
        data.mkdir(mode=0o700)
        (data / "device.json").write_text(
            json.dumps(
                {
                    "device_id": "6f1c1d0e-0000-4000-8000-000000000001",
                    "hub_url": "http://127.0.0.1:9",
                }
            )
        )
        result = run_cli(
            "run",
            "--data-dir",
            str(data),
            "--models",
            str(bundle_dir),
            "--port",
            str(port),
            cwd=tmp_path,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_enroll_reads_the_token_from_stdin(tmp_path: Path) -> None:
    """The token never needs to be on the command line (visible in /proc/PID/cmdline)."""
    result = run_cli(
        "enroll",
        "--hub",
        "http://127.0.0.1:9",
        "--token-file",
        "-",
        "--data-dir",
        "d",
        cwd=tmp_path,
        stdin="x" * 32 + "\n",
    )
    # The token was read and accepted as well-formed: what fails is reaching the hub.
    assert result.returncode == 2
    assert "hub_unreachable" in result.stderr
    assert "Traceback" not in result.stderr


# --- the service ---------------------------------------------------------------------------


def test_install_service_writes_a_unit_that_systemd_verifies(
    tmp_path: Path, bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path}/state"\nmodels_dir = "{bundle_dir}"\n')
    units = tmp_path / "units"
    argv = ["install-service", "--config", str(config), "--unit-dir", str(units), "--json"]
    assert main([*argv, "--user", "root"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["unit"])
    unit = path.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=escalade-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "User=root",
        f"--config {config}",
    ):
        assert line in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The unit names an ExecStart that must exist: point it at this interpreter's script.
    exe = Path(sys.executable).parent / "edge-agent"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e .)")
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_for_gpu_profiles_keeps_devices_visible() -> None:
    kwargs = {"exec_start": Path("/x"), "config": Path("/c"), "models_dir": Path("/m")}
    assert "PrivateDevices=no" in render_unit(user="u", gpu=True, **kwargs)  # type: ignore[arg-type]
    assert "PrivateDevices=yes" in render_unit(user="u", gpu=False, **kwargs)  # type: ignore[arg-type]


def test_sd_notify_speaks_to_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert notify("READY=1", env={"NOTIFY_SOCKET": str(path)})
        assert server.recv(64) == b"READY=1"
    assert notify("READY=1", env={}) is False


def test_doctor_reports_profile_providers_in_use_and_the_hub(
    tmp_path: Path, bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'data_dir = "{tmp_path}/state"\nmodels_dir = "{bundle_dir}"\ndetect_machine = "x86_64"\n'
    )
    assert main(["doctor", "--config", str(config), "--json"]) == 1  # not enrolled: a failed check
    report = json.loads(capsys.readouterr().out)
    checks = report["checks"]
    assert report["ok"] is False
    assert checks["profile"]["name"] == "x86-64-cpu"
    assert checks["profile"]["why"] == ["architecture x86_64"]
    assert checks["providers"]["used"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in checks["providers"]["available"]
    assert checks["models"]["ok"] is True
    assert checks["hub"]["enrolled"] is False
    assert "edge-agent enroll" in checks["hub"]["detail"]
    # No agent running: status is a runtime error, said in one line.
    assert main(["status", "--config", str(config), "--port", "9"]) == 2
    assert "no agent answers at http://127.0.0.1:9" in capsys.readouterr().err
