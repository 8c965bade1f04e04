"""A compromised device, scripted: a real agent process whose encoder was tampered with (its
embeddings scaled tenfold) escalates to a real hub until the hub quarantines it; the operator
sees it in `cloud-hub devices list`, releases it, and the repaired device is served again."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cloud_hub.audit import QuarantineEvidence
from cloud_hub.store import Store, sqlite_url
from escalade.demo import infer
from escalade.procs import (
    agent_command,
    enroll_agent,
    hub_command,
    migrate_hub,
    module_command,
    run_step,
    service,
)
from escalade_protocol.artifacts import (
    EMBEDDING,
    ArtifactFile,
    load_manifest,
    sha256_file,
    verified_path,
    write_manifest,
)


def tampered_bundle(bundle_dir: Path, out: Path, scale: float) -> Path:
    """A copy of the bundle whose encoder multiplies every embedding by `scale`."""
    shutil.copytree(bundle_dir, out)
    path = out / "encoder.onnx"
    model = onnx.load(path)
    graph = model.graph
    producer = next(node for node in graph.node if EMBEDDING in node.output)
    producer.output[list(producer.output).index(EMBEDDING)] = "honest_embedding"
    graph.initializer.append(numpy_helper.from_array(np.float32(scale), "tamper_scale"))
    graph.node.append(helper.make_node("Mul", ["honest_embedding", "tamper_scale"], [EMBEDDING]))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    manifest = load_manifest(out)
    encoder = ArtifactFile(path=manifest.encoder.path, sha256=sha256_file(path))
    write_manifest(out, manifest.model_copy(update={"encoder": encoder}))
    return out


def devices_json(hub_dir: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        module_command("cloud_hub.cli", "devices", "list", "--data-dir", str(hub_dir), "--json"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


@pytest.mark.timeout(120)
async def test_misbehaving_device_is_quarantined_listed_and_released(
    bundle_dir: Path, tmp_path: Path
) -> None:
    evil = tampered_bundle(bundle_dir, tmp_path / "evil-bundle", scale=10.0)
    manifest = load_manifest(bundle_dir)
    with np.load(verified_path(bundle_dir, manifest.test_split)) as data:
        inputs = np.asarray(data["X"][:60], dtype=np.float32)
    hub_dir, agent_dir = tmp_path / "hub", tmp_path / "agent"
    await migrate_hub(hub_dir)
    hub_argv = hub_command(hub_dir, bundle_dir, "--allow-simulated-tee")
    async with service("hub", hub_argv, log_dir=tmp_path) as hub:
        await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)

        def agent_argv(models: Path, *extra: str) -> list[str]:
            return agent_command(agent_dir, models, "--allow-simulated-tee", *extra)

        # A tampered device does not run the agent's own check of its embeddings either.
        unchecked = tmp_path / "unchecked.toml"
        unchecked.write_text("check_embedding_bands = false\n")
        async with (
            service(
                "evil-agent", agent_argv(evil, "--config", str(unchecked)), log_dir=tmp_path
            ) as agent,
            aiohttp.ClientSession() as http,
        ):
            answers = [(await infer(http, agent.url, x, "hub")).response for x in inputs]
            async with http.get(agent.url + "/v1/health") as response:
                health = await response.json()
        reasons = [(a.reason.value, a.hub_error and a.hub_error.value) for a in answers]
        rejected = ("hub_rejected", "embedding_rejected")
        quarantined = ("device_refused", "device_quarantined")
        assert set(reasons) == {rejected, quarantined}, reasons
        first = reasons.index(quarantined)
        assert first > 5  # reputation, not a single message, decided
        assert all(r == quarantined for r in reasons[first:])
        assert health["status"] == "degraded"
        assert "device_refused" in health["reasons"]
        assert health["hub_error"] == "device_quarantined"

        (row,) = devices_json(hub_dir)
        assert row["status"] == "quarantined"
        assert "poisoning checks" in str(row["reason"])
        store = Store.open(sqlite_url(hub_dir))
        try:
            events = store.audit_log()
            counts = store.counts()
            chain = store.verify_audit_chain()
        finally:
            store.close()
        assert [(e.action, e.actor) for e in events] == [
            ("enroll", "device"),
            ("quarantine", "hub"),
        ]
        assert isinstance(events[1].evidence, QuarantineEvidence)
        assert events[1].evidence.cusum >= 20
        assert chain.ok
        assert chain.entries == 2
        # Every refused-for-poisoning message was recorded with its evidence; refusals after
        # quarantine were not (they never reached the checks).
        assert counts.escalations == first

        await run_step(
            module_command(
                "cloud_hub.cli",
                "devices",
                "release",
                str(row["device_id"]),
                "--data-dir",
                str(hub_dir),
                "--reason",
                "encoder re-flashed",
            ),
            what="release",
        )
        (row,) = devices_json(hub_dir)
        assert row["status"] == "active"

        async with (
            service("repaired-agent", agent_argv(bundle_dir), log_dir=tmp_path) as agent,
            aiohttp.ClientSession() as http,
        ):
            served = [(await infer(http, agent.url, x, "hub")).response for x in inputs[:10]]
        assert all(r.source == "hub" for r in served), [r.reason for r in served]
