"""Writing bundle files: whole or not at all, and byte-identical for identical content."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# np.savez stamps each member with the current time; a fixed stamp keeps digests reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    temporary.replace(path)


def npz_bytes(arrays: dict[str, NDArray[np.generic]], *, compress: bool = False) -> bytes:
    """A .npz as np.savez (or, with `compress`, np.savez_compressed) writes it, without
    timestamps. Deflate at a fixed level is deterministic for a given zlib.
    """
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method, compresslevel=6) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = method  # a ZipInfo ignores the archive's default
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()
