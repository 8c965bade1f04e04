"""Loading a graph spec file into a ready executor (reads files; everything else is pure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.graphs.errors import GraphErrorCode, GraphSpecError
from edge_agent.graphs.executor import GraphExecutor, model_paths
from edge_agent.graphs.spec import parse_spec, validate
from escalade_protocol.artifacts import ModelManifest


def load_graph(
    spec_path: Path,
    *,
    bundle_dir: Path,
    manifest: ModelManifest,
    providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
) -> GraphExecutor:
    """Parse and validate the spec, check every model file's digest, open the sessions.

    The spec's extra ONNX paths are relative to the spec's folder (and may not leave it)."""
    try:
        text = spec_path.read_text()
    except OSError as exc:
        raise GraphSpecError(
            GraphErrorCode.INVALID_SPEC, f"cannot read {spec_path}: {exc.strerror}"
        ) from None
    graph = validate(parse_spec(text, source=str(spec_path)), num_classes=manifest.num_classes)
    paths = model_paths(graph, bundle_dir, manifest, spec_path.parent)
    return GraphExecutor(graph, paths, providers=providers)
