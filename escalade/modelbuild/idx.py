"""The IDX format of (Fashion-)MNIST, parsed without a dependency.

Layout: two zero bytes, a type byte, a dimension count, then one big-endian uint32 per
dimension and the row-major data, itself big-endian. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# IDX type byte -> element type (big-endian where it matters).
_TYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class IdxError(Exception):
    """Not an IDX file, or a truncated one."""


def parse_idx(data: bytes, source: str = "idx data") -> NDArray[np.generic]:
    if len(data) < 4:
        raise IdxError(f"{source}: too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _TYPES or ndim == 0:
        raise IdxError(f"{source}: bad IDX magic number 0x{data[:4].hex()}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[type_code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{source}: {len(data)} bytes, the header {shape} implies {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # Native byte order, and a writable copy rather than a view of the file's bytes.
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> NDArray[np.generic]:
    """Read an IDX file, gunzipping it when its name ends in .gz."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: not a valid gzip file: {exc}") from exc
    return parse_idx(raw, str(path))
