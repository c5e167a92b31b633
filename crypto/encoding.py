"""Binary encoding helpers shared by every wire and state format.

All integers are big-endian and unsigned. Variable-length fields carry a length prefix
(``u16`` for keys and short strings, ``u32`` for payloads) and every decoder states an
upper bound, so a hostile length can never make us allocate or read past the limit.
Every structure starts with a version byte checked by :meth:`Reader.version`.
"""

from __future__ import annotations

import struct
from typing import Final

from crypto.errors import FieldTooLarge, InvalidValue, TrailingBytes, Truncated, UnsupportedVersion

__all__ = ["MAX_PAYLOAD", "Reader", "Writer"]

#: Default upper bound for a ``u32``-prefixed payload (16 MiB).
MAX_PAYLOAD: Final = 16 * 1024 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BYTE: Final = tuple(bytes((i,)) for i in range(256))


class Writer:
    """Append-only encoder; ``bytes(writer)`` or :meth:`finish` gives the result."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        """Append one byte."""
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._parts.append(_BYTE[value])
        return self

    def u16(self, value: int) -> Writer:
        """Append a big-endian 16-bit unsigned integer."""
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        """Append a big-endian 32-bit unsigned integer."""
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        """Append a big-endian 64-bit unsigned integer."""
        self._parts.append(_U64.pack(value))
        return self

    def raw(self, data: bytes) -> Writer:
        """Append bytes of a length both sides know (no prefix)."""
        self._parts.append(bytes(data))
        return self

    def bytes16(self, data: bytes) -> Writer:
        """Append ``u16 length || data``."""
        n = len(data)
        if n > 0xFFFF:
            raise ValueError("field longer than 65535 bytes")
        self._parts += (_U16.pack(n), data if type(data) is bytes else bytes(data))
        return self

    def bytes32(self, data: bytes) -> Writer:
        """Append ``u32 length || data``."""
        n = len(data)
        if n > 0xFFFFFFFF:
            raise ValueError("field longer than 2^32-1 bytes")
        self._parts += (_U32.pack(n), data if type(data) is bytes else bytes(data))
        return self

    def str16(self, text: str) -> Writer:
        """Append a UTF-8 string with a ``u16`` length prefix."""
        data = text.encode("utf-8")
        n = len(data)
        if n > 0xFFFF:
            raise ValueError("field longer than 65535 bytes")
        self._parts += (_U16.pack(n), data)
        return self

    def finish(self) -> bytes:
        """Return everything written so far."""
        return b"".join(self._parts)

    def __bytes__(self) -> bytes:
        return self.finish()


class Reader:
    """Bounds-checked decoder over one buffer. Raises only :class:`DecodeError` subclasses."""

    __slots__ = ("_data", "_len", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data if type(data) is bytes else bytes(data)
        self._len = len(self._data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return self._len - self._pos

    def _take(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > self._len:
            raise Truncated(n, self._len - pos)
        self._pos = end
        return self._data[pos:end]

    def version(self, expected: int) -> int:
        """Read the leading version byte and require it to equal ``expected``."""
        got = self.u8()
        if got != expected:
            raise UnsupportedVersion(expected, got)
        return got

    def u8(self) -> int:
        """Read one byte."""
        pos = self._pos
        if pos >= self._len:
            raise Truncated(1, 0)
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        """Read a big-endian 16-bit unsigned integer."""
        pos = self._pos
        if pos + 2 > self._len:
            raise Truncated(2, self._len - pos)
        self._pos = pos + 2
        value: int = _U16.unpack_from(self._data, pos)[0]
        return value

    def u32(self) -> int:
        """Read a big-endian 32-bit unsigned integer."""
        pos = self._pos
        if pos + 4 > self._len:
            raise Truncated(4, self._len - pos)
        self._pos = pos + 4
        value: int = _U32.unpack_from(self._data, pos)[0]
        return value

    def u64(self) -> int:
        """Read a big-endian 64-bit unsigned integer."""
        pos = self._pos
        if pos + 8 > self._len:
            raise Truncated(8, self._len - pos)
        self._pos = pos + 8
        value: int = _U64.unpack_from(self._data, pos)[0]
        return value

    def flag(self, field: str) -> bool:
        """Read a boolean byte (exactly 0 or 1)."""
        value = self.u8()
        if value > 1:
            raise InvalidValue(field, f"boolean byte must be 0 or 1, got {value}")
        return value == 1

    def raw(self, n: int) -> bytes:
        """Read exactly ``n`` bytes."""
        return self._take(n)

    def bytes16(self, field: str, limit: int = 0xFFFF) -> bytes:
        """Read ``u16 length || data`` with ``length <= limit``."""
        n = self.u16()
        if n > limit:
            raise FieldTooLarge(field, n, limit)
        return self._take(n)

    def bytes32(self, field: str, limit: int = MAX_PAYLOAD) -> bytes:
        """Read ``u32 length || data`` with ``length <= limit``."""
        n = self.u32()
        if n > limit:
            raise FieldTooLarge(field, n, limit)
        return self._take(n)

    def str16(self, field: str, limit: int = 256) -> str:
        """Read a ``u16``-prefixed UTF-8 string of at most ``limit`` bytes."""
        data = self.bytes16(field, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidValue(field, "not valid UTF-8") from exc

    def count(self, field: str, limit: int) -> int:
        """Read a ``u16`` element count with ``count <= limit``."""
        n = self.u16()
        if n > limit:
            raise FieldTooLarge(field, n, limit)
        return n

    def end(self) -> None:
        """Require that every byte was consumed."""
        if self.remaining:
            raise TrailingBytes(self.remaining)
