"""How big the hub's Gramine manifest gets, and how long hashing its trusted files takes.

Gramine cannot be installed here (no Debian package source for it; its `graminelibos` manifest
library is not on PyPI), so this is an EMULATION of the one step of `gramine-sgx-sign` that
scales with the trusted set: every `sgx.trusted_files` entry is expanded (directories
recursively) into `{ uri = "file:...", sha256 = "..." }`, each file is hashed, and the
expanded list is written as TOML. It does not compute MRENCLAVE (the enclave's memory layout),
and entries naming Gramine's own runtime (`{{ gramine.runtimedir() }}`) are counted as absent.

    PYTHONPATH=. python bench/enclave_manifest.py [--models DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloud_hub.enclave import current_layout, render_manifest, trusted_files

# Gramine's own expressions ({{ gramine.runtimedir() }}, ...), kept recognisable through TOML.
PLACEHOLDER = "GRAMINE-EXPR"


def expand(uris: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """(uri, sha256) for every file under the trusted URIs; and how many URIs are Gramine's."""
    expanded: list[tuple[str, str]] = []
    gramine_own = 0
    for uri in uris:
        if PLACEHOLDER in uri:
            gramine_own += 1
            continue
        root = Path(uri.removeprefix("file:"))
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            expanded.append((f"file:{path}", hashlib.sha256(path.read_bytes()).hexdigest()))
    return expanded, gramine_own


def measure(models: Path) -> dict[str, Any]:
    layout = current_layout(models, data_host_dir=Path("/var/lib/escalade-hub"))
    started = time.perf_counter()
    template = render_manifest(layout)
    render_s = time.perf_counter() - started
    # What gramine-manifest would leave of the Jinja expressions does not change the count.
    parsed = tomllib.loads(template.replace("{{", PLACEHOLDER + "(").replace("}}", ")"))
    uris = trusted_files(parsed)
    started = time.perf_counter()
    expanded, gramine_own = expand(uris)
    hash_s = time.perf_counter() - started
    listing = (
        "sgx.trusted_files = [\n"
        + "".join(f'  {{ uri = "{uri}", sha256 = "{digest}" }},\n' for uri, digest in expanded)
        + "]\n"
    )
    return {
        "trusted_entries": len(uris),
        "gramine_runtime_entries": gramine_own,
        "trusted_files": len(expanded),
        "trusted_bytes": sum(Path(u.removeprefix("file:")).stat().st_size for u, _ in expanded),
        "template_bytes": len(template.encode()),
        "expanded_list_bytes": len(listing.encode()),
        "render_s": render_s,
        "hash_s": hash_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="model bundle (default: build digits)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="escalade-enclave-") as tmp:
        models = Path(args.models) if args.models else Path(tmp) / "bundle"
        if args.models is None:
            from escalade.modelbuild import build_bundle

            build_bundle("digits", models, seed=0, hub_epochs=10)
        result = measure(models.resolve())
    r = result
    print(f"trusted: {r['trusted_entries']} entries -> {r['trusted_files']} files, ", end="")
    print(
        f"{r['trusted_bytes'] / 1e6:.0f} MB; template {r['template_bytes'] / 1e3:.0f} KB, ", end=""
    )
    print(f"expanded list {r['expanded_list_bytes'] / 1e6:.2f} MB")
    print(f"render {r['render_s']:.2f} s; hashing (what scales in signing) {r['hash_s']:.1f} s")
    print(f"{r['gramine_runtime_entries']} entries are Gramine's own runtime (absent here)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
