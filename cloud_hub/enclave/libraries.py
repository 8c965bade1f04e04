"""Which system shared libraries the hub loads: the manifest trusts those files, not the
directories they sit in.

Trusting `/usr/lib/<multiarch>` whole put 1,100 files and 1.7 GB into the manifest (twice on a
merged-/usr system, where `/lib/<multiarch>` is the same directory), about 90% of every byte
`gramine-sgx-sign` hashed (bench/enclave_manifest.py). The hub needs a few dozen of them.

The dynamic loader itself answers which ones: `ldd` on the interpreter, libpython and every
ELF object among the trusted Python files lists the transitive closure of their `DT_NEEDED`
entries, resolved as the loader resolves them. Each is then named as the enclave's loader will
look for it: under the first system directory on LD_LIBRARY_PATH that holds a file of that
name, the same file. Libraries opened with `dlopen` by name at run time are not in that
closure; the enclave test (tests/test_enclave_manifest.py) runs a real hub with the manifest's
environment and fails on any mapped file the manifest does not trust.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

ELF_MAGIC: Final = b"\x7fELF"
# `ldd` prints "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" for a resolved library
# and "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader; "=> not found" resolves nothing.
_RESOLVED = re.compile(r"(?:=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)")
# Arguments per ldd run: keeps the command line short whatever the closure's size.
_BATCH: Final = 64


class LddUnavailable(RuntimeError):
    """No `ldd` here (a musl system, a stripped image): trust the directories instead."""


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == ELF_MAGIC
    except OSError:
        return False


def elf_objects(roots: Iterable[Path]) -> list[Path]:
    """Every ELF file among `roots` (files, or directories searched recursively)."""
    found: set[Path] = set()
    for root in roots:
        candidates = root.rglob("*.so*") if root.is_dir() else [root]
        found.update(path for path in candidates if path.is_file() and is_elf(path))
    return sorted(found)


def _ldd(objects: Sequence[Path]) -> set[Path]:
    ldd = shutil.which("ldd")
    if ldd is None:
        raise LddUnavailable("ldd not found")
    resolved: set[Path] = set()
    for start in range(0, len(objects), _BATCH):
        batch = [str(path) for path in objects[start : start + _BATCH]]
        # ldd exits 1 when any argument is not dynamic (a static helper): the others still
        # print their libraries, which is all that is read here.
        result = subprocess.run(
            [ldd, *batch], capture_output=True, text=True, check=False, timeout=120
        )
        resolved.update(Path(match) for match in _RESOLVED.findall(result.stdout))
    return resolved


def _as_loaded_from(library: Path, search: Sequence[Path]) -> Path | None:
    """`library` named under the first of `search` that holds that file, or None."""
    for directory in search:
        candidate = directory / library.name
        if candidate.exists() and os.path.samefile(candidate, library):
            return candidate
    return None


def system_libraries(objects: Sequence[Path], search: Sequence[Path]) -> list[Path]:
    """The shared libraries that `objects` load from the `search` directories, as the paths
    the loader opens there (LD_LIBRARY_PATH order). Libraries elsewhere (a wheel's own
    `numpy.libs`, libpython) are left to the entries that already trust them."""
    named = (_as_loaded_from(library, search) for library in _ldd(objects))
    return sorted({path for path in named if path is not None})
