"""Task graphs on the agent: specs of models and edges, a plan of independent stages, an
executor that runs branches in parallel where that pays, routes nodes local or hub and stops at
a confident gate; served as KServe v2 models (`edge_agent.graphs.serve`)."""

from edge_agent.graphs.errors import GraphErrorCode, GraphSpecError
from edge_agent.graphs.executor import (
    GraphAnswer,
    GraphExecutor,
    NodeRun,
    Routed,
    RouteFn,
    StageTiming,
)
from edge_agent.graphs.load import load_graph
from edge_agent.graphs.plan import Plan, Stage, plan
from edge_agent.graphs.spec import Graph, GraphSpec, Node, parse_spec, validate

__all__ = [
    "Graph",
    "GraphAnswer",
    "GraphErrorCode",
    "GraphExecutor",
    "GraphSpec",
    "GraphSpecError",
    "Node",
    "NodeRun",
    "Plan",
    "RouteFn",
    "Routed",
    "Stage",
    "StageTiming",
    "load_graph",
    "parse_spec",
    "plan",
    "validate",
]
