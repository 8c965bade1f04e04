"""Errors of task graphs.

GraphSpecError (edge_agent.errors.AgentError)   a graph spec that cannot run; carries a code

The codes are the graph loader's own table (`GraphErrorCode`): a bad spec is found when the
agent starts, never on the wire, so these codes do not join escalade_protocol's HTTP table.
"""

from __future__ import annotations

from enum import StrEnum

from edge_agent.errors import AgentError


class GraphErrorCode(StrEnum):
    INVALID_SPEC = "invalid_spec"  # not TOML, or fails the schema (names the field)
    DUPLICATE_NODE = "duplicate_node"
    UNKNOWN_NODE = "unknown_node"  # an edge names a node the spec lacks
    UNKNOWN_MODEL = "unknown_model"  # a node names a model neither the bundle nor [models] has
    CYCLE = "cycle"
    TYPE_MISMATCH = "type_mismatch"  # an edge carries another kind of tensor than its end takes
    BAD_GATE = "bad_gate"  # an exit threshold on a node that gives no class probabilities
    BAD_ROUTE = "bad_route"  # route = "auto" on a node the hub cannot stand in for
    UNUSED_NODE = "unused_node"  # feeds neither the output nor a gate
    DIGEST_MISMATCH = "digest_mismatch"  # an extra ONNX file is missing or not the spec's bytes
    BAD_MODEL = "bad_model"  # an ONNX file's declared inputs/outputs disagree with the spec
    NAME_TAKEN = "name_taken"  # two graphs, or a graph and the bundle's model, share a name


class GraphSpecError(AgentError):
    def __init__(self, code: GraphErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
