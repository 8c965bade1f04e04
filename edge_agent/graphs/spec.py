"""Task graph specs (TOML) and their validation into a resolved `Graph` (pure).

A spec names its nodes and the models they run; edges are the node ids a node reads from
(``input`` is the graph's input). Models are the bundle's own (``encoder``: input ->
embedding; ``head``: embedding -> class probabilities) or extra ONNX files under
``[models.<name>]``, each with its SHA-256, what it takes and what it gives::

    name = "digits-gated"
    output = "mix"

    [models.groups]                      # a gate over class groups
    path = "graph/groups.onnx"
    sha256 = "<64 hex>"
    gives = "groups"
    groups = [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]]

    [models.group0]                      # a specialist: probabilities over its classes
    path = "graph/group0.onnx"
    sha256 = "<64 hex>"
    gives = "probabilities"
    classes = [0, 6, 8, 9]

    [[nodes]]
    id = "embed"
    model = "encoder"
    inputs = ["input"]

    [[nodes]]
    id = "gate"
    model = "head"
    inputs = ["embed"]
    exit_threshold = 0.9                 # a confident gate: its answer settles the task

    [[nodes]]
    id = "mix"                           # sum over groups of p(group) * p(class | group)
    gate = "groups_node"
    experts = ["g0", "g1", "g2"]
    route = "auto"                       # the router may send this node to the hub

Every check names its code (`GraphErrorCode`): cycles, unknown nodes and models, edges whose
tensor kind differs from what their end takes, gates that give no probabilities, routes the hub
cannot serve, nodes that feed nothing.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.graphs.errors import GraphErrorCode, GraphSpecError

INPUT = "input"
ENCODER, HEAD = "encoder", "head"
Kind = Literal["input", "embedding", "probabilities", "groups"]
Parallel = Literal["auto", "always", "never"]
NodeRoute = Literal["local", "auto"]
_ID = r"^[a-z][a-z0-9_-]{0,39}$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelSpec(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    takes: Literal["input", "embedding"] = "embedding"
    gives: Literal["embedding", "probabilities", "groups"]
    # probabilities: the bundle's classes its outputs stand for, in order (default: all).
    classes: tuple[int, ...] | None = None
    # groups: the bundle's classes in each group (disjoint), one output per group.
    groups: tuple[tuple[int, ...], ...] | None = None


class NodeSpec(_Strict):
    id: str = Field(pattern=_ID)
    # A model node runs `model` on its one input; a mixture node combines `gate` and `experts`.
    model: str | None = None
    inputs: tuple[str, ...] = ()
    gate: str | None = None
    experts: tuple[str, ...] = ()
    exit_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    route: NodeRoute = "local"


class GraphSpec(_Strict):
    name: str = Field(pattern=_ID)
    version: int = Field(default=1, ge=1)
    output: str
    # Independent branches: in threads ("always"), in sequence ("never"), or whichever the
    # executor measured to be faster for each stage on this device ("auto").
    parallel: Parallel = "auto"
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Port:
    """What a node gives: a kind, and for probabilities the classes, for groups the groups."""

    kind: Kind
    classes: tuple[int, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    model: str | None  # None: a mixture
    inputs: tuple[str, ...]  # every node read from: the input, or the gate then the experts
    gives: Port
    exit_threshold: float | None
    route: NodeRoute
    # For a routed node: the encoder node whose embedding the hub is sent.
    embedding_from: str | None = None


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    version: int
    output: str
    parallel: Parallel
    num_classes: int
    nodes: Mapping[str, Node]  # in a topological order
    models: Mapping[str, ModelSpec]  # the extra ONNX models the nodes use

    @property
    def gates(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes.values() if n.exit_threshold is not None)


def parse_spec(text: str, *, source: str = "graph spec") -> GraphSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GraphSpecError(GraphErrorCode.INVALID_SPEC, f"{source} is not TOML: {exc}") from None
    try:
        # Through JSON: strict mode then takes TOML arrays for tuples, as the config does.
        return GraphSpec.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        raise GraphSpecError(
            GraphErrorCode.INVALID_SPEC, f"{source}: {where}: {err['msg']}"
        ) from None


def _builtin(num_classes: int) -> dict[str, tuple[Kind, Port]]:
    every = tuple(range(num_classes))
    return {
        ENCODER: ("input", Port("embedding")),
        HEAD: ("embedding", Port("probabilities", classes=every)),
    }


def _model_port(name: str, model: ModelSpec, num_classes: int) -> Port:
    def bad(message: str) -> GraphSpecError:
        return GraphSpecError(GraphErrorCode.INVALID_SPEC, f"model {name}: {message}")

    if model.gives == "probabilities":
        if model.groups is not None:
            raise bad("groups are for gives = 'groups'")
        classes = model.classes if model.classes is not None else tuple(range(num_classes))
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise bad("classes must be two or more distinct classes")
        if not all(0 <= c < num_classes for c in classes):
            raise bad(f"classes must lie in 0 .. {num_classes - 1}")
        return Port("probabilities", classes=classes)
    if model.gives == "groups":
        if model.groups is None or len(model.groups) < 2 or model.classes is not None:
            raise bad("gives = 'groups' needs groups (two or more) and no classes")
        flat = [c for group in model.groups for c in group]
        if len(set(flat)) != len(flat) or not all(0 <= c < num_classes for c in flat):
            raise bad(f"groups must be disjoint classes in 0 .. {num_classes - 1}")
        return Port("groups", groups=model.groups)
    if model.classes is not None or model.groups is not None:
        raise bad("an embedding model has neither classes nor groups")
    return Port("embedding")


def _topological(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Kahn's algorithm in spec order; the nodes left over lie on a cycle."""
    order: list[str] = []
    placed = {INPUT}
    pending = list(deps)
    while pending:
        ready = [n for n in pending if set(deps[n]) <= placed]
        if not ready:
            raise GraphSpecError(
                GraphErrorCode.CYCLE, f"nodes on a cycle: {', '.join(sorted(pending))}"
            )
        for n in ready:
            order.append(n)
            placed.add(n)
        pending = [n for n in pending if n not in placed]
    return order


def ancestors(nodes: Mapping[str, Node], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for dep in nodes[stack.pop()].inputs:
            if dep != INPUT and dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def validate(spec: GraphSpec, *, num_classes: int) -> Graph:  # noqa: PLR0912 (one check per code, in order)
    """The spec resolved against a bundle of `num_classes` classes, or the first problem."""
    builtin = _builtin(num_classes)
    clash = sorted(set(spec.models) & set(builtin))
    if clash:
        raise GraphSpecError(
            GraphErrorCode.INVALID_SPEC, f"[models] may not redefine the bundle's {clash[0]}"
        )
    ports: dict[str, tuple[Kind, Port]] = dict(builtin)
    for name, model in spec.models.items():
        ports[name] = (model.takes, _model_port(name, model, num_classes))

    specs: dict[str, NodeSpec] = {}
    for node in spec.nodes:
        if node.id in specs or node.id == INPUT:
            raise GraphSpecError(GraphErrorCode.DUPLICATE_NODE, f"node id {node.id!r} is taken")
        if (node.model is None) == (node.gate is None):
            raise GraphSpecError(
                GraphErrorCode.INVALID_SPEC, f"node {node.id}: give either model or gate+experts"
            )
        if node.model is not None and (len(node.inputs) != 1 or node.experts):
            raise GraphSpecError(
                GraphErrorCode.INVALID_SPEC, f"node {node.id}: a model node reads one input"
            )
        if node.gate is not None and (node.inputs or len(node.experts) < 2):
            raise GraphSpecError(
                GraphErrorCode.INVALID_SPEC,
                f"node {node.id}: a mixture reads a gate and two or more experts, no inputs",
            )
        if node.model is not None and node.model not in ports:
            raise GraphSpecError(
                GraphErrorCode.UNKNOWN_MODEL, f"node {node.id}: no model named {node.model!r}"
            )
        specs[node.id] = node
    deps = {
        n.id: n.inputs if n.model is not None else (n.gate or "", *n.experts)
        for n in specs.values()
    }
    for node_id, reads in deps.items():
        for dep in reads:
            if dep != INPUT and dep not in specs:
                raise GraphSpecError(
                    GraphErrorCode.UNKNOWN_NODE, f"node {node_id} reads unknown node {dep!r}"
                )
    if spec.output not in specs:
        raise GraphSpecError(GraphErrorCode.UNKNOWN_NODE, f"output names no node: {spec.output}")
    order = _topological(deps)

    resolved: dict[str, Node] = {}
    for node_id in order:
        node = specs[node_id]
        gives = _resolve_port(node, resolved, ports, num_classes)
        resolved[node_id] = Node(
            id=node_id,
            model=node.model,
            inputs=deps[node_id],
            gives=gives,
            exit_threshold=node.exit_threshold,
            route=node.route,
        )
    for done in list(resolved.values()):
        if done.exit_threshold is not None and done.gives.kind != "probabilities":
            raise GraphSpecError(
                GraphErrorCode.BAD_GATE,
                f"node {done.id} has an exit threshold but gives {done.gives.kind}",
            )
        if done.route == "auto":
            resolved[done.id] = _routed(done, resolved, num_classes)
    out = resolved[spec.output]
    if out.gives.kind != "probabilities":
        raise GraphSpecError(
            GraphErrorCode.TYPE_MISMATCH, f"output {out.id} gives {out.gives.kind}, not classes"
        )
    used = {spec.output, *ancestors(resolved, spec.output)}
    for gate in (n.id for n in resolved.values() if n.exit_threshold is not None):
        used |= {gate, *ancestors(resolved, gate)}
    unused = [n for n in order if n not in used]
    if unused:
        raise GraphSpecError(
            GraphErrorCode.UNUSED_NODE, f"nodes feed neither the output nor a gate: {unused}"
        )
    return Graph(
        name=spec.name,
        version=spec.version,
        output=spec.output,
        parallel=spec.parallel,
        num_classes=num_classes,
        nodes=resolved,
        models={name: spec.models[name] for name in spec.models if _uses(resolved, name)},
    )


def _uses(nodes: Mapping[str, Node], model: str) -> bool:
    return any(n.model == model for n in nodes.values())


def _gives(node_id: str, resolved: Mapping[str, Node]) -> Port:
    return Port("input") if node_id == INPUT else resolved[node_id].gives


def _resolve_port(
    node: NodeSpec,
    resolved: Mapping[str, Node],
    ports: Mapping[str, tuple[Kind, Port]],
    num_classes: int,
) -> Port:
    if node.model is not None:
        takes, gives = ports[node.model]
        got = _gives(node.inputs[0], resolved)
        if got.kind != takes:
            raise GraphSpecError(
                GraphErrorCode.TYPE_MISMATCH,
                f"edge {node.inputs[0]} -> {node.id}: carries {got.kind}, "
                f"model {node.model} takes {takes}",
            )
        return gives
    assert node.gate is not None
    gate = _gives(node.gate, resolved)
    if gate.kind != "groups" or len(gate.groups) != len(node.experts):
        raise GraphSpecError(
            GraphErrorCode.TYPE_MISMATCH,
            f"edge {node.gate} -> {node.id}: a mixture's gate gives one probability per "
            f"expert ({len(node.experts)} groups), it gives {gate.kind} "
            f"({len(gate.groups)} groups)",
        )
    for group, expert in zip(gate.groups, node.experts, strict=True):
        port = _gives(expert, resolved)
        if port.kind != "probabilities" or set(port.classes) != set(group):
            raise GraphSpecError(
                GraphErrorCode.TYPE_MISMATCH,
                f"edge {expert} -> {node.id}: the gate's group {list(group)} needs an expert "
                f"over those classes; {expert} gives {port.kind} {list(port.classes)}",
            )
    return Port("probabilities", classes=tuple(range(num_classes)))


def _routed(node: Node, resolved: Mapping[str, Node], num_classes: int) -> Node:
    """A node the router may send to the hub: the hub answers every class from the bundle's
    embedding, so the node must give all classes and read (through its ancestors) the encoder."""
    if node.gives.classes != tuple(range(num_classes)):
        raise GraphSpecError(
            GraphErrorCode.BAD_ROUTE,
            f"node {node.id}: route = 'auto' needs a node over all {num_classes} classes",
        )
    encoders = sorted(a for a in ancestors(resolved, node.id) if resolved[a].model == ENCODER)
    if len(encoders) != 1:
        raise GraphSpecError(
            GraphErrorCode.BAD_ROUTE,
            f"node {node.id}: route = 'auto' needs exactly one encoder node upstream "
            f"(the hub takes the bundle's embedding); found {encoders}",
        )
    return Node(
        id=node.id,
        model=node.model,
        inputs=node.inputs,
        gives=node.gives,
        exit_threshold=node.exit_threshold,
        route=node.route,
        embedding_from=encoders[0],
    )
