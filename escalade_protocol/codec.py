"""A minimal binary codec with exactly one encoding per value.

Integers are fixed-width big-endian, byte strings carry a length prefix, and a reader refuses
trailing bytes. Two equal messages therefore encode to equal bytes, and those bytes are what
gets signed: there is no second, "equivalent" encoding for an attacker to play with.
"""

from __future__ import annotations

import struct

from escalade_protocol.errors import ErrorCode, ProtocolError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(_U8.pack(value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def fixed(self, value: bytes, size: int) -> Writer:
        if len(value) != size:
            raise ValueError(f"expected {size} bytes, got {len(value)}")
        self._parts.append(value)
        return self

    def short_bytes(self, value: bytes) -> Writer:
        """Length-prefixed (u16) bytes, for names and identifiers."""
        self._parts.append(_U16.pack(len(value)))
        self._parts.append(value)
        return self

    def long_bytes(self, value: bytes) -> Writer:
        """Length-prefixed (u32) bytes, for payloads."""
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(value)
        return self

    def text(self, value: str) -> Writer:
        return self.short_bytes(value.encode("utf-8"))

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def _take(self, size: int) -> memoryview:
        end = self._pos + size
        if end > len(self._data):
            raise ProtocolError(ErrorCode.MALFORMED, "message is truncated")
        view = self._data[self._pos : end]
        self._pos = end
        return view

    def u8(self) -> int:
        value: int = _U8.unpack(self._take(1))[0]
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def fixed(self, size: int) -> bytes:
        return bytes(self._take(size))

    def short_bytes(self) -> bytes:
        return bytes(self._take(self.u16()))

    def long_bytes(self) -> bytes:
        return bytes(self._take(self.u32()))

    def text(self) -> str:
        try:
            return self.short_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.MALFORMED, "text field is not UTF-8") from None

    @property
    def position(self) -> int:
        return self._pos

    def rest(self) -> bytes:
        return bytes(self._take(len(self._data) - self._pos))

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes after message")
