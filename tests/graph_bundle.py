"""A copy of the session's digits bundle with the demo's task graph built into it."""

from __future__ import annotations

import shutil
from pathlib import Path

from escalade.modelbuild.graph_heads import build_graph


def graph_bundle(bundle_dir: Path, out: Path) -> Path:
    """Copy `bundle_dir` to `out` (the shared bundle stays as built) and build its graph."""
    shutil.copytree(bundle_dir, out)
    build_graph(out)
    return out
