"""`escalade demo`: a hub and an agent as real processes on loopback, the test split through
the agent's API, and the figures that say what the cascade achieved.

The enclave is SIMULATED here (no SGX on a laptop): the demo says so in its output and JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from edge_agent.graphs import parse_spec
from escalade.bundle_notes import bytes_note
from escalade.procs import Service, agent_command, enroll_agent, hub_command, migrate_hub, service
from escalade_protocol.artifacts import ModelManifest, load_manifest, verified_path
from escalade_protocol.messages import (
    AnswerReason,
    AttestationSummary,
    InferRequest,
    InferResponse,
    Route,
)

_HUB_REFUSALS = frozenset({AnswerReason.HUB_REJECTED, AnswerReason.DEVICE_REFUSED})

Progress = Callable[[str, int, int], None]


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Accuracy(_Report):
    edge_only: float
    hub_only: float
    cascade: float


class Percentiles(_Report):
    count: int
    p50: float | None
    p95: float | None


class Latency(_Report):
    local: Percentiles
    escalated: Percentiles
    hub_only: Percentiles


class Bytes(_Report):
    """Bytes leaving the device per escalation, and what uploading the raw input would cost
    in the same envelope (one byte per input value, the datasets' native pixel encoding)."""

    per_escalation: float | None
    raw_input: int
    # Why the two compare as they do (embedding size against input size).
    note: str


class PolicyCheck(_Report):
    """What a strict agent (no allow_simulated_tee) did with the same hub."""

    source: str
    reason: str
    attestation: AttestationSummary | None


class GraphDemo(_Report):
    """The bundle's task graph (docs/task-graphs.md) over the same inputs, through the agent's
    KServe v2 endpoint for it."""

    name: str
    inputs: int
    ended_early: float  # share the confident gate settled
    escalated: float  # share whose routed node went to the hub
    accuracy: float
    latency_ms: Percentiles


class DemoReport(_Report):
    model_id: str
    model_version: int
    inputs: int
    answered_locally: int
    escalated: int
    escalation_rate: float
    accuracy: Accuracy
    latency_ms: Latency
    bytes: Bytes
    rejected: int
    attestation: AttestationSummary | None
    simulated_tee: bool
    policy_check: PolicyCheck
    graph: GraphDemo | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    response: InferResponse
    latency_ms: float


def percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles(count=0, p50=None, p95=None)
    arr = np.asarray(values)
    return Percentiles(
        count=len(values), p50=float(np.percentile(arr, 50)), p95=float(np.percentile(arr, 95))
    )


def summarize(
    manifest: ModelManifest,
    labels: npt.NDArray[np.int64],
    cascade: list[Outcome],
    hub_only: list[Outcome],
    policy_check: PolicyCheck,
) -> DemoReport:
    n = len(labels)

    def accuracy(predicted: list[int]) -> float:
        return float(np.mean(np.asarray(predicted) == labels))

    escalated = [o for o in cascade if o.response.source == "hub"]
    local = [o for o in cascade if o.response.source == "local"]
    rejected = sum(o.response.reason in _HUB_REFUSALS for o in [*cascade, *hub_only])
    sent = [o.response.escalation_bytes for o in escalated if o.response.escalation_bytes]
    verdicts = [o.response.attestation for o in [*cascade, *hub_only] if o.response.attestation]
    return DemoReport(
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        inputs=n,
        answered_locally=len(local),
        escalated=len(escalated),
        escalation_rate=len(escalated) / n,
        accuracy=Accuracy(
            edge_only=accuracy([o.response.local_label for o in cascade]),
            hub_only=accuracy([o.response.label for o in hub_only]),
            cascade=accuracy([o.response.label for o in cascade]),
        ),
        latency_ms=Latency(
            local=percentiles([o.latency_ms for o in local]),
            escalated=percentiles([o.latency_ms for o in escalated]),
            hub_only=percentiles([o.latency_ms for o in hub_only]),
        ),
        bytes=Bytes(
            per_escalation=float(np.mean(sent)) if sent else None,
            raw_input=_raw_envelope_bytes(manifest, sent),
            note=bytes_note(manifest),
        ),
        rejected=rejected,
        attestation=verdicts[-1] if verdicts else None,
        simulated_tee=any(v.insecure for v in verdicts),
        policy_check=policy_check,
    )


def _raw_envelope_bytes(manifest: ModelManifest, sent: list[int]) -> int:
    """The same envelope around the raw input instead of the embedding."""
    embedding_bytes = manifest.embedding_dim * np.dtype(manifest.wire_dtype).itemsize
    overhead = (sent[0] - embedding_bytes) if sent else 0
    return overhead + manifest.input_dim


async def infer(
    http: aiohttp.ClientSession, agent_url: str, features: npt.NDArray[np.float32], route: Route
) -> Outcome:
    request = InferRequest(input=[float(v) for v in features], route=route)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.post(
        agent_url + "/v1/infer",
        data=request.model_dump_json(),
        headers={"Content-Type": "application/json"},
    ) as response:
        body = await response.read()
    elapsed = (loop.time() - started) * 1000.0
    if response.status != 200:
        raise RuntimeError(f"agent answered HTTP {response.status}: {body[:300]!r}")
    return Outcome(InferResponse.model_validate_json(body), elapsed)


async def _replay(
    http: aiohttp.ClientSession,
    *,
    agent: Service,
    X: npt.NDArray[np.float32],
    route: Route,
    label: str,
    progress: Progress,
) -> list[Outcome]:
    outcomes = []
    for i, features in enumerate(X):
        outcomes.append(await infer(http, agent.url, features, route))
        progress(label, i + 1, len(X))
    return outcomes


async def _graph_replay(
    http: aiohttp.ClientSession,
    *,
    agent: Service,
    name: str,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    progress: Progress,
) -> GraphDemo:
    """Each input through the graph's v2 endpoint; the response parameters say how it ran."""
    url = f"{agent.url}/v2/models/{name}/infer"
    loop = asyncio.get_running_loop()
    labels, early, escalated, latency = [], [], [], []
    for i, features in enumerate(X):
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, len(features)],
                    "datatype": "FP32",
                    "data": [float(v) for v in features],
                }
            ],
            "outputs": [{"name": "label"}],
        }
        started = loop.time()
        async with http.post(url, json=body) as response:
            raw = await response.json()
            if response.status != 200:
                raise RuntimeError(f"agent answered HTTP {response.status}: {raw}")
        latency.append((loop.time() - started) * 1000.0)
        labels.append(int(raw["outputs"][0]["data"][0]))
        early.append(bool(raw["parameters"]["ended_early"]))
        escalated.append(bool(raw["parameters"]["escalated"]))
        progress(f"graph {name}", i + 1, len(X))
    return GraphDemo(
        name=name,
        inputs=len(X),
        ended_early=float(np.mean(early)),
        escalated=float(np.mean(escalated)),
        accuracy=float(np.mean(np.asarray(labels) == y)),
        latency_ms=percentiles(latency),
    )


def graph_spec(models_dir: Path) -> Path | None:
    """The bundle's task graph spec (`escalade models build --graph`), if it has one."""
    spec = models_dir / "graph" / "graph.toml"
    return spec if spec.is_file() else None


async def run_demo(models_dir: Path, *, progress: Progress, limit: int | None = None) -> DemoReport:
    manifest = load_manifest(models_dir)
    with np.load(verified_path(models_dir, manifest.test_split)) as data:
        X = np.asarray(data["X"], dtype=np.float32)
        y = np.asarray(data["y"], dtype=np.int64)
    if limit is not None:
        X, y = X[:limit], y[:limit]

    with tempfile.TemporaryDirectory(prefix="escalade-demo-") as tmp:
        root = Path(tmp)
        hub_dir, agent_dir = root / "hub", root / "agent"
        progress("starting hub", 0, 1)
        await migrate_hub(hub_dir)
        hub_argv = hub_command(hub_dir, models_dir, "--allow-simulated-tee")
        async with service("hub", hub_argv, log_dir=root) as hub:
            progress("starting hub", 1, 1)
            await enroll_agent(hub_url=hub.url, hub_dir=hub_dir, agent_dir=agent_dir)
            agent_argv = agent_command(agent_dir, models_dir)
            spec = graph_spec(models_dir)
            graph_argv: list[str] = []
            if spec is not None:
                config = root / "agent-graph.toml"
                config.write_text(f"graphs = [{json.dumps(str(spec))}]\n")
                graph_argv = ["--config", str(config)]
            progress("starting agent", 0, 1)
            async with (
                service(
                    "agent", [*agent_argv, *graph_argv, "--allow-simulated-tee"], log_dir=root
                ) as agent,
                aiohttp.ClientSession() as http,
            ):
                progress("starting agent", 1, 1)
                replay = functools.partial(_replay, http, agent=agent, X=X, progress=progress)
                cascade = await replay(route="auto", label="cascade (router decides)")
                hub_only = await replay(route="hub", label="hub only (every input escalated)")
                graph = None
                if spec is not None:
                    name = parse_spec(spec.read_text()).name
                    graph = await _graph_replay(
                        http, agent=agent, name=name, X=X, y=y, progress=progress
                    )
            # The same device, with the default policy: it must refuse the simulated hub.
            async with (
                service("strict-agent", agent_argv, log_dir=root) as strict,
                aiohttp.ClientSession() as http,
            ):
                refused = (await infer(http, strict.url, X[0], "hub")).response
    policy_check = PolicyCheck(
        source=refused.source, reason=refused.reason, attestation=refused.attestation
    )
    report = summarize(manifest, y, cascade, hub_only, policy_check)
    return report.model_copy(update={"graph": graph})
