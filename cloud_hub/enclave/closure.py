"""Which installed files the enclave must trust: the hub's distribution closure, not the
whole site-packages.

A virtual environment holds the test tools, the model builder and more beside the hub's own
dependencies; trusting every ``site-packages`` directory whole measured all of them into
MRENCLAVE (some 62,800 files). Instead we follow the installed ``escalade`` distribution's
requirements (core, plus the optional extras the hub uses when present: ``fast`` for uvloop,
``postgres`` for psycopg), recursively, and trust each distribution's top-level entries from
its RECORD (package directories, single-file modules, ``.libs`` folders, ``dist-info``).

Markers other than ``extra == ...`` are not evaluated (that needs ``packaging``, which the hub
does not depend on): a requirement whose distribution is installed is followed. That can
only trust a little more than needed, never less.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path, PurePosixPath

HUB_DISTRIBUTION = "escalade"
HUB_EXTRAS = frozenset({"fast", "postgres"})
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution, extras: frozenset[str]) -> list[tuple[str, str]]:
    """(name, extras) of the requirements that apply with these extras."""
    out = []
    for line in dist.requires or ():
        requirement, _, marker = line.partition(";")
        wanted = _EXTRA_MARKER.findall(marker)
        if wanted and not any(_normalize(w) in extras for w in wanted):
            continue
        match = _NAME.match(requirement)
        if match is not None:
            out.append((match.group(1), match.group(2) or ""))
    return out


def distribution_closure(
    root: str = HUB_DISTRIBUTION, extras: Iterable[str] = HUB_EXTRAS
) -> list[metadata.Distribution]:
    """Every installed distribution `root` requires, transitively, in a stable order; `root`
    itself is left out (the hub's packages are trusted one by one, wherever they live)."""
    seen: dict[str, metadata.Distribution] = {}
    expanded: set[tuple[str, frozenset[str]]] = set()
    pending = [(root, frozenset(_normalize(e) for e in extras))]
    while pending:
        name, wanted = pending.pop()
        key = _normalize(name)
        if (key, wanted) in expanded:
            continue
        expanded.add((key, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if key == _normalize(root):
                raise
            continue  # an optional dependency that is not installed
        seen[key] = dist
        for req, req_extras in _requirements(dist, wanted):
            sub = frozenset(_normalize(e) for e in req_extras.split(",") if e.strip())
            pending.append((req, sub))
    return [seen[key] for key in sorted(seen) if key != _normalize(root)]


def trusted_entries(dists: Iterable[metadata.Distribution]) -> list[Path]:
    """Top-level files and directories the distributions installed into site-packages."""
    entries: set[Path] = set()
    for dist in dists:
        base = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files or ():
            parts = PurePosixPath(str(file)).parts
            if not parts or parts[0] == "..":
                continue  # scripts in bin/ and the like: not imported
            if parts[0] == "__pycache__" or len(parts) == 1:
                entry = base.joinpath(*parts)  # a single-file module (or its bytecode)
            else:
                entry = base / parts[0]
            # RECORD paths are relative to site-packages; anything else is not imported.
            inside = base in entry.parents
            if inside and entry.exists() and not _is_editable_hook(entry):
                entries.add(entry)
    return sorted(entries)


def _is_editable_hook(path: Path) -> bool:
    """An editable install's import hook: -S never runs it; the hub's packages are found
    through PYTHONPATH instead."""
    return path.name.startswith("__editable__") or path.suffix == ".pth"
