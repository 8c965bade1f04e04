"""Task graphs served by the agent as KServe v2 models: ``GET /v2/models/<graph>``,
``/v2/models/<graph>/ready``, ``POST /v2/models/<graph>/infer``.

A graph takes the bundle's input (``input``, FP32 ``[-1, input_dim]``) and gives per row
``probabilities``, ``label``, ``confidence``, ``ended_early`` (BOOL), ``exit_node``, ``path``
(the node ids in the order they ran, joined by ``>``) and ``nodes`` (``id@local`` /
``id@hub``, joined by ``,``). The response's ``parameters`` say the same for the request:
``graph``, ``path``, ``nodes``, ``ended_early``, ``exit_node``, ``escalated`` (typed values for
one row; for several rows, each row's value joined by ``;``). Request parameter ``route``
("auto", "local", "hub") applies to the graph's routed nodes, as it does to the cascade.

A routed node is decided by the agent's router (`edge_agent.router.decide` on the node's own
probabilities) and escalates through the agent's hub client, like a cascade answer: budgets,
the breaker, embedding bands and audits all apply. The router state is replaced on the event
loop only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from edge_agent import v2
from edge_agent.errors import HubUnavailable
from edge_agent.graphs.errors import GraphErrorCode, GraphSpecError
from edge_agent.graphs.executor import F32, GraphAnswer, GraphExecutor, Routed, RouteFn
from edge_agent.graphs.load import load_graph
from edge_agent.graphs.spec import Node
from edge_agent.router import HubAnswered, Reason, compute_signals, decide, observe
from edge_agent.router import Routed as RouterRouted
from escalade_protocol.artifacts import ENCODER_INPUT, verified_path
from escalade_protocol.device_reports import OutcomePath, OutcomeRecord
from escalade_protocol.errors import ErrorCode, ProtocolError
from escalade_protocol.messages import AnswerReason, Route

if TYPE_CHECKING:
    from edge_agent.api import AgentState

GRAPHS = web.AppKey("graphs", dict[str, GraphExecutor])
OUTPUTS = ("probabilities", "label", "confidence", "ended_early", "exit_node", "path", "nodes")


def load_graphs(state: AgentState) -> dict[str, GraphExecutor]:
    """The configured graphs, validated against the running bundle (not yet calibrated)."""
    manifest = state.runtime.manifest
    providers = list(zip(state.runtime.plan.names, state.runtime.plan.options, strict=True))
    graphs: dict[str, GraphExecutor] = {}
    for path in state.config.graphs:
        spec = path if path.is_absolute() else state.config.models_dir / path
        executor = load_graph(
            spec, bundle_dir=state.config.models_dir, manifest=manifest, providers=providers
        )
        name = executor.graph.name
        if name in graphs or name == manifest.model_id:
            executor.close()
            raise GraphSpecError(GraphErrorCode.NAME_TAKEN, f"a model named {name} exists")
        routed = any(n.route == "auto" for n in executor.graph.nodes.values())
        if routed and manifest.router.signal == "learned":
            executor.close()
            raise GraphSpecError(
                GraphErrorCode.BAD_ROUTE,
                f"graph {name}: routed nodes are decided on their own probabilities; this "
                "bundle's router is the learned one",
            )
        graphs[name] = executor
    return graphs


def calibrate(state: AgentState, graphs: Mapping[str, GraphExecutor]) -> None:
    """Time each graph's parallel stages on a real input (the first of the bundle's test
    split; zeros when the bundle ships none)."""
    manifest = state.runtime.manifest
    sample = np.zeros(manifest.input_dim, dtype=np.float32)
    if graphs:
        with np.load(verified_path(state.config.models_dir, manifest.test_split)) as data:
            sample = np.asarray(data["X"][0], dtype=np.float32)
    for executor in graphs.values():
        executor.calibrate(sample)


# Local by choice, or escalated: any other reason means the router wanted the hub and could
# not have it (the cascade's "degraded" answers).
_CHOSEN = frozenset(
    {
        AnswerReason.CONFIDENT,
        AnswerReason.FORCED_LOCAL,
        AnswerReason.UNCERTAIN,
        AnswerReason.EXPLORE,
        AnswerReason.FORCED_HUB,
        AnswerReason.OUT_OF_DOMAIN,
    }
)


@dataclass(slots=True)
class _Row:
    """What the router saw of the row's routed node (the last one, if several)."""

    local_label: int | None = None
    signal: float = 0.0
    reason: AnswerReason = AnswerReason.CONFIDENT
    hub_latency_us: int | None = None


def agent_route(state: AgentState, route: Route, row: _Row) -> RouteFn:
    async def decide_node(node: Node, probabilities: F32, embedding: F32, features: F32) -> Routed:
        client = state.client
        assert client is not None
        embedding = embedding.reshape(-1)
        signals = compute_signals(probabilities, embedding)
        now = time.monotonic()
        decision = decide(
            state.router,
            signals,
            now=now,
            rng_draw=state.rng.random(),
            route=route,
            hub_up=client.hub_up,
        )
        state.router = observe(state.router, RouterRouted(decision, now))
        row.local_label, row.signal = int(np.argmax(probabilities)), decision.confidence
        if decision.reason is Reason.HUB_DOWN:
            row.reason = client.status().failure or AnswerReason.HUB_UNREACHABLE
        else:
            row.reason = AnswerReason(decision.reason.value)
        bands = state.domain.bands if state.config.check_embedding_bands else None
        if not decision.escalate:
            return Routed(probabilities, "local", row.reason.value)
        if bands is not None and bands.would_be_refused(embedding):
            row.reason = AnswerReason.EMBEDDING_OUT_OF_BAND
            return Routed(probabilities, "local", row.reason.value)
        asked = time.perf_counter()
        try:
            result = await client.escalate(embedding, features=features.reshape(-1))
        except HubUnavailable as exc:
            row.reason = exc.reason
            return Routed(probabilities, "local", row.reason.value)
        latency = time.perf_counter() - asked
        row.hub_latency_us = int(latency * 1e6)
        agreed = result.answer.label == row.local_label
        state.router = observe(
            state.router, HubAnswered(decision, agreed=agreed, latency_ms=latency * 1e3)
        )
        if state.audits is not None:
            state.audits.escalated(result)
        hub = result.answer.probabilities.to_numpy().astype(np.float32)
        return Routed(hub, "hub", row.reason.value)

    return decide_node


def _record(
    executor: GraphExecutor, answer: GraphAnswer, row: _Row, latency_s: float
) -> OutcomeRecord:
    """The answer's outcome record, under the graph's name and version as the model."""
    if answer.escalated:
        path = OutcomePath.ESCALATED
    else:
        path = OutcomePath.LOCAL if row.reason in _CHOSEN else OutcomePath.DEGRADED
    return OutcomeRecord(
        record_id=uuid.uuid4(),
        at_ms=time.time_ns() // 1_000_000,
        model_id=executor.graph.name,
        model_version=executor.graph.version,
        path=path,
        reason=row.reason.value,
        local_label=answer.label if row.local_label is None else row.local_label,
        hub_label=answer.label if answer.escalated else None,
        signal=answer.confidence if row.local_label is None else row.signal,
        latency_us=int(latency_s * 1e6),
        hub_latency_us=row.hub_latency_us,
    )


def _tensors(answers: list[GraphAnswer]) -> v2.Tensors:
    n = len(answers)
    classes = len(answers[0].probabilities)
    return {
        "probabilities": (
            "FP32",
            [n, classes],
            [float(p) for a in answers for p in a.probabilities],
        ),
        "label": ("INT64", [n], [a.label for a in answers]),
        "confidence": ("FP32", [n], [a.confidence for a in answers]),
        "ended_early": ("BOOL", [n], [a.ended_early for a in answers]),
        "exit_node": ("BYTES", [n], [a.exit_node or "" for a in answers]),
        "path": ("BYTES", [n], [_path(a) for a in answers]),
        "nodes": ("BYTES", [n], [_nodes(a) for a in answers]),
    }


def _path(answer: GraphAnswer) -> str:
    return ">".join(r.node for r in answer.runs)


def _nodes(answer: GraphAnswer) -> str:
    return ",".join(f"{r.node}@{r.where}" for r in answer.runs)


def _parameters(name: str, answers: list[GraphAnswer]) -> dict[str, Any]:
    rows: dict[str, list[Any]] = {
        "path": [_path(a) for a in answers],
        "nodes": [_nodes(a) for a in answers],
        "ended_early": [a.ended_early for a in answers],
        "exit_node": [a.exit_node or "" for a in answers],
        "escalated": [a.escalated for a in answers],
    }
    out: dict[str, Any] = {"graph": name}
    for key, values in rows.items():
        if len(values) == 1:
            out[key] = values[0]
        else:
            out[key] = ";".join(str(v).lower() if isinstance(v, bool) else v for v in values)
    return out


def add_graph_routes(app: web.Application, key: web.AppKey[Any], names: list[str]) -> None:
    """Fixed paths per graph: they win over the bundle model's ``/v2/models/{name}``."""

    def named(request: web.Request) -> tuple[AgentState, GraphExecutor]:
        state = request.app[key]
        name = request.match_info["graph"]
        executor = request.app[GRAPHS][name]
        version = request.match_info.get("version")
        if version is not None and version != str(executor.graph.version):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"graph {name} has no version {version}")
        return state, executor

    async def ready(request: web.Request) -> web.Response:
        state, _ = named(request)
        return web.json_response({"ready": state.ready}, status=200 if state.ready else 503)

    async def metadata(request: web.Request) -> web.Response:
        state, executor = named(request)
        m = state.runtime.manifest
        graph = executor.graph
        width: dict[str, tuple[str, list[int]]] = {
            "probabilities": ("FP32", [-1, m.num_classes]),
            "label": ("INT64", [-1]),
            "confidence": ("FP32", [-1]),
            "ended_early": ("BOOL", [-1]),
        }
        outputs = [
            {
                "name": name,
                "datatype": width.get(name, ("BYTES", [-1]))[0],
                "shape": width.get(name, ("BYTES", [-1]))[1],
            }
            for name in OUTPUTS
        ]
        stages = [
            {
                "nodes": list(stage.nodes),
                "exits": list(stage.exits),
                "parallel": executor.stage_parallel(i),
                **(
                    {
                        "sequential_us": round(executor.timings[i].sequential_us, 1),
                        "parallel_us": round(executor.timings[i].parallel_us, 1),
                    }
                    if i in executor.timings
                    else {}
                ),
            }
            for i, stage in enumerate(executor.plan.stages)
        ]
        return web.json_response(
            {
                "name": graph.name,
                "versions": [str(graph.version)],
                "platform": "escalade_graph",
                "inputs": [{"name": ENCODER_INPUT, "datatype": "FP32", "shape": [-1, m.input_dim]}],
                "outputs": outputs,
                "parameters": {"stages": stages, "output": graph.output},
            }
        )

    async def infer(request: web.Request) -> web.Response:
        state, executor = named(request)
        if not state.ready:
            raise ProtocolError(ErrorCode.NOT_READY, "the agent is starting: models not warm yet")
        m = state.runtime.manifest
        body = await request.read()
        parsed, rows = v2.parse_request(
            body, request.headers.get(v2.HEADER_LENGTH), input_dim=int(m.input_dim)
        )
        route = v2.route_of(parsed)
        domain = state.domain.inputs
        answers = []
        for row in rows:
            # Inputs outside the bundle's domain stay local (the hub would count them against
            # the device), as they do on the cascade's path.
            outside = domain is not None and not domain.contains(row)
            features = domain.clip(row) if outside and domain is not None else row
            started = time.perf_counter()
            seen = _Row(reason=AnswerReason.OUT_OF_DOMAIN if outside else AnswerReason.CONFIDENT)
            routed = agent_route(state, "local" if outside else route, seen)
            answer = await executor.execute(features, route=routed)
            # Committed before the answer leaves, as the cascade's answers are.
            await state.outbox.add(_record(executor, answer, seen, time.perf_counter() - started))
            answers.append(answer)
        name = executor.graph.name
        return v2.render_tensors(
            parsed,
            _tensors(answers),
            model=name,
            version=executor.graph.version,
            parameters=_parameters(name, answers),
        )

    for name in names:
        # A plain path per graph; "graph" in match_info comes from the regex-free pattern.
        for prefix in (
            f"/v2/models/{{graph:{name}}}",
            f"/v2/models/{{graph:{name}}}/versions/{{version}}",
        ):
            app.router.add_get(prefix, metadata)
            app.router.add_get(prefix + "/ready", ready)
            app.router.add_post(prefix + "/infer", infer)
