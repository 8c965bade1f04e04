"""A task graph served by a real agent process as a KServe v2 model, called with a stock
Triton client (tritonclient from PyPI): metadata, readiness, an input the gate settles (ended
early, every node local) and an input forced past it to the hub (the mixture node at the hub,
through the agent's hub client, against a real hub process)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from agent_stack import agent_argv, enrolled, free_port, health, until, write_config
from graph_bundle import graph_bundle
from sqlalchemy import select

from cloud_hub.store import Store, sqlite_url
from cloud_hub.store.schema import device_reports
from edge_agent.graphs import load_graph
from escalade.procs import service
from escalade_protocol.artifacts import load_manifest

OUTPUTS = ("label", "probabilities", "ended_early", "path", "nodes")


def triton_calls(url: str, graph: str, rows: list[npt.NDArray[np.float32]]) -> dict[str, Any]:
    """What a stock KServe v2 client sees (blocking; run in a thread)."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        out: dict[str, Any] = {
            "ready": client.is_model_ready(graph),
            "metadata": client.get_model_metadata(graph),
            "answers": [],
        }
        for row, route, binary in ((rows[0], "auto", True), (rows[1], "hub", False)):
            tensor = triton.InferInput("input", [1, row.size], "FP32")
            tensor.set_data_from_numpy(row.reshape(1, -1), binary_data=binary)
            wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
            result = client.infer(graph, [tensor], outputs=wanted, parameters={"route": route})
            out["answers"].append(
                {
                    "parameters": result.get_response()["parameters"],
                    **{name: result.as_numpy(name) for name in OUTPUTS},
                }
            )
        return out
    finally:
        client.close()


@pytest.fixture(scope="module")
def built(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graph_bundle(bundle_dir, tmp_path_factory.mktemp("graph-v2") / "bundle")


def sure_and_unsure(built: Path) -> list[npt.NDArray[np.float32]]:
    manifest = load_manifest(built)
    executor = load_graph(built / "graph" / "graph.toml", bundle_dir=built, manifest=manifest)
    with np.load(built / "test.npz") as data:
        inputs = np.asarray(data["X"], dtype=np.float32)
    try:
        early = [executor.run(x).ended_early for x in inputs[:100]]
    finally:
        executor.close()
    return [inputs[early.index(True)], inputs[early.index(False)]]


async def test_a_graph_served_as_a_kserve_model(built: Path, tmp_path: Path) -> None:
    manifest = load_manifest(built)
    name = f"{manifest.model_id}-graph"
    rows = sure_and_unsure(built)
    config = write_config(
        tmp_path / "agent.toml",
        data_dir=tmp_path / "agent",
        bundle_dir=built,
        extra='graphs = ["graph/graph.toml"]',
    )
    async with (
        enrolled(tmp_path, built, free_port()),
        service("agent", agent_argv(config), log_dir=tmp_path) as agent,
        aiohttp.ClientSession() as http,
    ):
        seen = await asyncio.to_thread(triton_calls, agent.url, name, rows)

        async def drained() -> bool:
            return (await health(http, agent.url)).outbox_depth == 0

        await until(drained, what="the graph's outcome records delivered")
        # The bundle's own model is still served beside the graph; unknown names are 404.
        async with http.get(f"{agent.url}/v2/models/{manifest.model_id}/ready") as resp:
            assert resp.status == 200
        async with http.get(f"{agent.url}/v2/models/{name}-nope/ready") as resp:
            assert resp.status == 404
        async with http.get(f"{agent.url}/v2/models/{name}/versions/9") as resp:
            assert resp.status == 404

    # Each graph answer's outcome record reached the hub, under the graph's name.
    store = Store.open(sqlite_url(tmp_path / "hub"))
    try:
        with store.engine.connect() as conn:
            records = conn.execute(
                select(device_reports.c.model_id, device_reports.c.path, device_reports.c.reason)
            ).all()
    finally:
        store.close()
    assert sorted(tuple(r) for r in records) == [
        (name, "escalated", "forced_hub"),
        (name, "local", "confident"),
    ]

    assert seen["ready"] is True
    metadata = seen["metadata"]
    assert metadata["platform"] == "escalade_graph"
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, manifest.input_dim]}
    ]
    stages = metadata["parameters"]["stages"]
    assert [s["nodes"] for s in stages][1:3] == [["gate"], ["groups", "group0", "group1", "group2"]]
    # The agent measured the branch stage both ways at start and says which it chose.
    assert stages[2]["parallel"] is (stages[2]["parallel_us"] < stages[2]["sequential_us"])

    early, late = seen["answers"]
    assert early["parameters"]["ended_early"] is True
    assert early["parameters"]["exit_node"] == "gate"
    assert early["parameters"]["nodes"] == "embed@local,gate@local"
    assert early["parameters"]["escalated"] is False
    assert early["ended_early"].tolist() == [True]
    assert early["path"].tolist() == [b"embed>gate"]

    assert late["parameters"]["ended_early"] is False
    assert late["parameters"]["escalated"] is True
    assert late["parameters"]["nodes"].endswith("mix@hub")
    assert late["parameters"]["path"] == "embed>gate>groups>group0>group1>group2>mix"
    probabilities = late["probabilities"].reshape(-1)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    assert int(late["label"][0]) == int(np.argmax(probabilities))


def test_the_demo_runs_the_bundles_graph_through_the_agent(built: Path, tmp_path: Path) -> None:
    """`escalade demo` on a bundle with a graph reports how the graph ran beside the cascade."""
    out = tmp_path / "demo.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "escalade.cli",
            "demo",
            "--models",
            str(built),
            "--limit",
            "40",
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
    graph = report["graph"]
    assert graph["name"] == f"{load_manifest(built).model_id}-graph"
    assert graph["inputs"] == 40
    assert 0.5 < graph["ended_early"] < 1.0
    assert graph["escalated"] <= 1.0 - graph["ended_early"]
    assert 0.5 < graph["accuracy"] <= 1.0
    assert "task graph" in result.stdout


def test_an_agent_with_a_bad_graph_spec_refuses_to_start(built: Path, tmp_path: Path) -> None:
    """A spec with a cycle stops `edge-agent run` with exit 2 and the code on one line, before
    anything listens (the identity is made first: the check is the graph's, not enrollment's)."""
    import uuid

    from edge_agent.identity import DeviceIdentity, load_or_create_key

    agent = tmp_path / "agent"
    identity = DeviceIdentity(uuid.uuid4(), load_or_create_key(agent), "http://127.0.0.1:9")
    identity.save(agent)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "loop"\noutput = "b"\n'
        '[[nodes]]\nid = "a"\nmodel = "head"\ninputs = ["b"]\n'
        '[[nodes]]\nid = "b"\nmodel = "head"\ninputs = ["a"]\n'
    )
    config = write_config(
        tmp_path / "agent.toml",
        data_dir=tmp_path / "agent",
        bundle_dir=built,
        extra=f'graphs = ["{bad}"]',
    )
    result = subprocess.run(
        [*agent_argv(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "cycle: nodes on a cycle: a, b" in result.stderr
    assert "Traceback" not in result.stderr
