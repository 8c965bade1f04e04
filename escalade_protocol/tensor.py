"""Typed tensors on the wire: dtype code, shape, little-endian bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from escalade_protocol.codec import Reader, Writer
from escalade_protocol.errors import ErrorCode, ProtocolError

DTYPE_CODES: Final[dict[str, int]] = {"float32": 1, "float16": 2}
_CODE_TO_DTYPE: Final[dict[int, str]] = {code: name for name, code in DTYPE_CODES.items()}
# Little-endian numpy dtypes by name, made once (np.dtype(...).newbyteorder costs µs per call).
_WIRE_DTYPES: Final[dict[str, np.dtype[np.generic]]] = {
    name: np.dtype(name).newbyteorder("<") for name in DTYPE_CODES
}
MAX_DIMS: Final = 4
MAX_ELEMENTS: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_numpy(cls, array: npt.NDArray[np.generic], dtype: str | None = None) -> Tensor:
        name = dtype or array.dtype.name
        if name not in DTYPE_CODES:
            raise ProtocolError(ErrorCode.BAD_TENSOR_DTYPE, f"unsupported dtype {name}")
        le = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[name])
        return cls(name, tuple(int(d) for d in le.shape), le.tobytes())

    def to_numpy(self) -> npt.NDArray[np.generic]:
        return np.frombuffer(self.data, dtype=_WIRE_DTYPES[self.dtype]).reshape(self.shape)

    def encode_into(self, writer: Writer) -> Writer:
        writer.u8(DTYPE_CODES[self.dtype]).u8(len(self.shape))
        for dim in self.shape:
            writer.u32(dim)
        return writer.long_bytes(self.data)

    def encode(self) -> bytes:
        return self.encode_into(Writer()).getvalue()

    @classmethod
    def decode_from(cls, reader: Reader) -> Tensor:
        code = reader.u8()
        dtype = _CODE_TO_DTYPE.get(code)
        if dtype is None:
            raise ProtocolError(ErrorCode.BAD_TENSOR_DTYPE, f"unknown dtype code {code}")
        ndim = reader.u8()
        if ndim > MAX_DIMS:
            raise ProtocolError(
                ErrorCode.BAD_TENSOR_SHAPE, f"{ndim} dimensions, at most {MAX_DIMS}"
            )
        shape = tuple(reader.u32() for _ in range(ndim))
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise ProtocolError(ErrorCode.BAD_TENSOR_SHAPE, f"{count} elements is too many")
        data = reader.long_bytes()
        if len(data) != count * np.dtype(dtype).itemsize:
            raise ProtocolError(
                ErrorCode.MALFORMED, f"tensor data is {len(data)} bytes, shape {shape} needs more"
            )
        return cls(dtype, shape, data)

    @classmethod
    def decode(cls, data: bytes) -> Tensor:
        reader = Reader(data)
        tensor = cls.decode_from(reader)
        reader.finish()
        return tensor
