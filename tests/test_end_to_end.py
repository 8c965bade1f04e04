"""A real hub process and real agent processes talking HTTP over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from cloud_hub.store import Store, sqlite_url
from escalade.demo import infer
from escalade.procs import (
    agent_command,
    enroll_agent,
    hub_command,
    migrate_hub,
    module_command,
    service,
)
from escalade_protocol.artifacts import load_manifest, verified_path
from escalade_protocol.messages import ErrorBody


def test_hub_refuses_to_start_without_a_tee_or_explicit_simulation(
    bundle_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        module_command(
            "cloud_hub.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--models",
            str(bundle_dir),
            "--port",
            "0",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--allow-simulated-tee" in result.stderr
    assert "Traceback" not in result.stderr


async def test_uncertain_inputs_escalate_confident_ones_do_not(
    bundle_dir: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        X = np.asarray(data["X"], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    await migrate_hub(hub_dir)
    hub_argv = hub_command(hub_dir, bundle_dir, "--allow-simulated-tee")
    async with service("hub", hub_argv, log_dir=tmp_path) as hub:
        await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        key_mode = (agent_dir / "device.key").stat().st_mode & 0o777
        assert key_mode == 0o600

        agent_argv = agent_command(agent_dir, bundle_dir)
        async with (
            service("agent", [*agent_argv, "--allow-simulated-tee"], log_dir=tmp_path) as agent,
            aiohttp.ClientSession() as http,
        ):
            outcomes = [(await infer(http, agent.url, x, "auto")).response for x in X[:80]]
            local = [o for o in outcomes if o.source == "local"]
            escalated = [o for o in outcomes if o.source == "hub"]
            assert local, "no confident input among the first 80"
            assert escalated, "no uncertain input among the first 80"
            threshold = manifest.router.threshold
            for o in local:
                assert o.reason == "confident"
                assert o.path == "local"
                assert o.signal >= threshold
                assert o.hub_label is None
            for o in escalated:
                # Uncertain inputs, or now and then a confident one the router explores.
                assert o.reason in {"uncertain", "explore"}
                assert (o.signal < threshold) == (o.reason == "uncertain")
                assert o.path == "escalated"
                assert o.confidence == max(o.probabilities)
                assert o.hub_label == o.label
                assert o.attestation is not None
                assert o.attestation.status == "warning"
                assert o.attestation.insecure
                assert o.escalation_bytes is not None
                assert o.escalation_bytes > 0

            async with http.post(agent.url + "/v1/infer", json={"input": [1.0, 2.0]}) as resp:
                assert resp.status == 422
                assert ErrorBody.model_validate_json(await resp.read()).code == "bad_tensor_shape"
            async with http.post(
                agent.url + "/v1/infer",
                data=b"{not json",
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 400
                assert ErrorBody.model_validate_json(await resp.read()).code == "bad_request"
            async with http.get(agent.url + "/v1/health") as resp:
                health = await resp.json()
                assert health["status"] == "ok"
                assert health["hub_attestation"]["tee"] == "simulated"

        # Every escalation the agent reported is durable in the hub's database.
        store = Store.open(sqlite_url(hub_dir))
        try:
            assert store.counts().escalations == len(escalated)
        finally:
            store.close()

        # The same device without the relaxation refuses the simulated hub and stays local.
        async with (
            service("strict-agent", agent_argv, log_dir=tmp_path) as strict,
            aiohttp.ClientSession() as http,
        ):
            refused = (await infer(http, strict.url, X[0], "hub")).response
            assert refused.source == "local"
            assert refused.reason == "attestation_refused"
            assert refused.path == "degraded"
            assert refused.attestation is not None
            assert refused.attestation.status == "contraindicated"
            async with http.get(strict.url + "/v1/health") as resp:
                assert (await resp.json())["status"] == "degraded"


def test_demo_command_reports_figures_as_json(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "escalade.cli",
            "demo",
            "--models",
            str(bundle_dir),
            "--limit",
            "60",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["inputs"] == 60
    assert report["answered_locally"] + report["escalated"] == 60
    assert 0.0 < report["escalation_rate"] < 1.0
    for key in ("edge_only", "hub_only", "cascade"):
        assert 0.5 < report["accuracy"][key] <= 1.0
    assert report["rejected"] == 0
    assert report["simulated_tee"] is True
    assert report["policy_check"]["reason"] == "attestation_refused"
    assert "SIMULATED" in result.stdout
    assert "accuracy, cascade" in result.stdout


@pytest.mark.parametrize("argv", [["models", "build", "--dataset", "nope", "--out", "x"]])
def test_cli_errors_are_clear(argv: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "escalade.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout


async def test_escalation_budget_holds_in_the_running_agent(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The agent spends at most its per-minute budget, then answers locally and says why."""
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        X = np.asarray(data["X"][:30], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    config = tmp_path / "agent.toml"
    # A threshold of 1 makes every input uncertain (float32 probabilities stay below 1 here).
    config.write_text("escalations_per_minute = 3\nadaptive_router = false\nthreshold = 1.0\n")
    await migrate_hub(hub_dir)
    async with service(
        "hub", hub_command(hub_dir, bundle_dir, "--allow-simulated-tee"), log_dir=tmp_path
    ) as hub:
        await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
        argv = agent_command(
            agent_dir, bundle_dir, "--allow-simulated-tee", "--config", str(config)
        )
        async with (
            service("agent", argv, log_dir=tmp_path) as agent,
            aiohttp.ClientSession() as http,
        ):
            outcomes = [(await infer(http, agent.url, x, "auto")).response for x in X]
    assert [o.source for o in outcomes[:3]] == ["hub"] * 3
    assert {o.reason for o in outcomes[:3]} == {"uncertain"}
    assert {(o.source, o.path, o.reason) for o in outcomes[3:]} == {
        ("local", "degraded", "budget_minute")
    }
