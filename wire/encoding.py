"""Encodings shared by every message on the wire: base64 bytes, usernames, ids.

Binary fields are standard base64 **with** padding; decoding is strict (no whitespace, no
URL-safe alphabet). :data:`B64` is the pydantic type of such a field: it validates from a
base64 string (or from ``bytes`` when a side builds a model from stored bytes) and serialises
back to the string.
"""

from __future__ import annotations

import binascii
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, StrictInt, WithJsonSchema

__all__ = [
    "B64",
    "CLIENT_ID_PATTERN",
    "U32",
    "U32_MAX",
    "USERNAME_PATTERN",
    "DeviceId",
    "QueryDeviceId",
    "Username",
    "WireDecodeError",
    "b64",
    "unb64",
]

USERNAME_PATTERN = r"^[a-z0-9_.-]{3,32}$"
"""Usernames: 3-32 of ``a-z 0-9 _ . -``."""

CLIENT_ID_PATTERN = r"^[A-Za-z0-9_\-+/=.:]{1,64}$"
"""A send's client message id (the relay's de-duplication key with the sending device)."""

U32_MAX = 2**32 - 1

# Integers are strict: JSON ``true`` or ``1.0`` is not an integer.
U32 = Annotated[StrictInt, Field(ge=0, le=U32_MAX)]
DeviceId = Annotated[StrictInt, Field(ge=1, le=U32_MAX)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN)]


def _decimal_digits(value: object) -> object:
    # Query strings are text: accept only plain decimal digits ("1", not "1.0" or "+1").
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("expected a decimal integer")
    return value


QueryDeviceId = Annotated[int, BeforeValidator(_decimal_digits), Field(ge=1, le=U32_MAX)]
"""A device id in a query string (``?device_id=``): decimal digits only, 1 ..= 2^32-1."""


class WireDecodeError(ValueError):
    """Bytes or JSON that do not match the wire format."""


def b64(data: bytes) -> str:
    """Standard base64 with padding, as ``str``."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict standard base64 (with padding) → bytes; raises :class:`WireDecodeError`."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise WireDecodeError("invalid base64 (standard alphabet, with padding)") from None


def _decode_b64(value: object) -> bytes:
    if isinstance(value, bytes):  # a model built from stored bytes
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    return unb64(value)


B64 = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    PlainSerializer(b64, return_type=str),
    WithJsonSchema({"type": "string", "format": "byte", "contentEncoding": "base64"}),
]
"""Bytes on the wire as standard, padded base64."""
