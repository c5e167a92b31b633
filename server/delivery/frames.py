"""WebSocket frame shapes (``docs/protocol-ws.md``): parsing client frames, building server frames.

Client frames are JSON objects with a ``type``. Parsing is strict (no coercion: ``"1"`` is not
a device id) and never echoes the offending input back: a :class:`FrameError` carries a code
and a short description only. Server frames are built as compact JSON text; ``deliver`` frames
are assembled from a pre-rendered per-payload tail so that fanning one payload out to many
devices encodes its base64 once.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

__all__ = [
    "AckFrame",
    "AuthFrame",
    "FrameError",
    "PingFrame",
    "Recipient",
    "SendFrame",
    "decode_b64",
    "dumps",
    "parse_client_frame",
]

U32_MAX = 2**32 - 1
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_\-+/=.:]{1,64}$"
USERNAME_PATTERN = r"^[a-z0-9_.-]{3,32}$"


class FrameError(Exception):
    """A client frame is not acceptable; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AuthFrame(_Frame):
    """``{"type":"auth","token":"..."}`` — must be the first frame."""

    type: Literal["auth"]
    token: StrictStr = Field(min_length=1, max_length=512)


class Recipient(_Frame):
    """One addressed device."""

    user: Annotated[StrictStr, Field(pattern=USERNAME_PATTERN)]
    device: Annotated[StrictInt, Field(ge=1, le=U32_MAX)]


class PayloadIn(_Frame):
    """One ciphertext (standard base64) and the devices it is for."""

    data: StrictStr
    to: list[Recipient] = Field(min_length=1)


class SendFrame(_Frame):
    """``send``: a client message id, payloads, and whether it is ephemeral."""

    type: Literal["send"]
    id: Annotated[StrictStr, Field(pattern=CLIENT_ID_PATTERN)]
    payloads: list[PayloadIn] = Field(min_length=1)
    ephemeral: StrictBool = False


class AckFrame(_Frame):
    """``ack``: queue sequence numbers received on this connection and stored by the client."""

    type: Literal["ack"]
    seqs: list[Annotated[StrictInt, Field(ge=1)]] = Field(min_length=1, max_length=1000)


class PingFrame(_Frame):
    """``ping``: answered with ``pong`` (application-level liveness)."""

    type: Literal["ping"]
    id: StrictStr | None = Field(default=None, max_length=64)


ClientFrame = AuthFrame | SendFrame | AckFrame | PingFrame

_MODELS: dict[str, type[_Frame]] = {
    "auth": AuthFrame,
    "send": SendFrame,
    "ack": AckFrame,
    "ping": PingFrame,
}


def _describe(exc: ValidationError) -> str:
    # Field locations and messages only: never the input values (they may be ciphertext).
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        loc = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


def parse_json(text: str) -> dict[str, Any]:
    """Decode a frame's JSON object; raises ``FrameError('malformed', ...)``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError("malformed", "frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise FrameError("malformed", "frame must be a JSON object")
    return value


def parse_client_frame(value: dict[str, Any]) -> ClientFrame:
    """Validate a decoded frame object against its ``type``'s schema."""
    raw_id = value.get("id")
    frame_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    kind = value.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "frame has no string 'type'", frame_id)
    model = _MODELS.get(kind)
    if model is None:
        raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}", frame_id)
    try:
        return model.model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise FrameError("bad_frame", _describe(exc), frame_id) from None


_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(
    Annotated[AuthFrame | SendFrame | AckFrame | PingFrame, Field(discriminator="type")]
)


def parse_text(text: str) -> ClientFrame:
    """Parse and validate a frame's JSON text in one pass (pydantic's JSON parser); on any
    error, redo it step by step to raise the precise :class:`FrameError`."""
    try:
        return _ADAPTER.validate_json(text, strict=True)
    except ValidationError:
        pass
    return parse_client_frame(parse_json(text))


def decode_b64(data: str, frame_id: str | None) -> bytes:
    """Strict standard base64 (with padding) → bytes."""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise FrameError(
            "bad_base64", "payload data is not valid standard base64", frame_id
        ) from None


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON text of a server frame."""
    return json.dumps(frame, separators=(",", ":"))


def error_frame(code: str, message: str, frame_id: str | None = None, **extra: Any) -> str:
    """``{"type":"error","id":...,"code":...,"message":...}``."""
    frame: dict[str, Any] = {"type": "error", "id": frame_id, "code": code, "message": message}
    frame.update(extra)
    return dumps(frame)


def deliver_tail(envelope_id: str, sender_user: str, sender_device: int, ts: int, b64: str) -> str:
    """Everything of a ``deliver`` frame after its ``seq`` (shared by all recipient devices)."""
    return (
        f',"envelope":"{envelope_id}","from":{{"user":"{sender_user}","device":{sender_device}}},'
        f'"ts":{ts},"data":"{b64}"}}'
    )


@dataclass(slots=True, frozen=True)
class Delivery:
    """One queued envelope ready to go to one device."""

    seq: int
    tail: str

    @property
    def text(self) -> str:
        """The complete ``deliver`` frame."""
        return f'{{"type":"deliver","seq":{self.seq}{self.tail}'


def b64(data: bytes) -> str:
    """Standard base64 with padding, as ``str``."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")
