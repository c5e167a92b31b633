"""Every WebSocket frame of ``/v1/ws`` (``docs/protocol-ws.md`` §2-4) as a typed model.

Frames are JSON text objects with a ``type``. *Client frames* (:class:`AuthFrame`,
:class:`SendFrame`, :class:`AckFrame`, :class:`PingFrame`) are strict: no coercion (``"1"``
is not a device id), no unknown fields — the relay validates them with exactly these
schemas. *Server frames* are read leniently (unknown fields ignored, so a newer relay may add
some); :func:`parse_server_frame` turns JSON text into one of them or raises
:class:`~wire.encoding.WireDecodeError`. :func:`encode` writes any frame as compact JSON.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from wire.encoding import CLIENT_ID_PATTERN, U32_MAX, USERNAME_PATTERN, WireDecodeError

__all__ = [
    "AcceptedFrame",
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "DeliverFrame",
    "DeviceRef",
    "EphemeralFrame",
    "ErrorFrame",
    "MismatchFrame",
    "PayloadIn",
    "PingFrame",
    "PongFrame",
    "PrekeysDrainFrame",
    "PrekeysLowFrame",
    "ReadyFrame",
    "Recipient",
    "SendFrame",
    "ServerFrame",
    "WsLimits",
    "encode",
    "parse_client_frame",
    "parse_server_frame",
]


# --- client → relay ----------------------------------------------------------------------


class _ClientFrame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AuthFrame(_ClientFrame):
    """``{"type":"auth","token":"..."}`` — must be the first frame."""

    type: Literal["auth"] = "auth"
    token: StrictStr = Field(min_length=1, max_length=512)


class Recipient(_ClientFrame):
    """One addressed device."""

    user: Annotated[StrictStr, Field(pattern=USERNAME_PATTERN)]
    device: Annotated[StrictInt, Field(ge=1, le=U32_MAX)]


class PayloadIn(_ClientFrame):
    """One ciphertext (standard base64) and the devices it is for."""

    data: StrictStr
    to: list[Recipient] = Field(min_length=1)


class SendFrame(_ClientFrame):
    """``send``: a client message id, payloads, whether it is ephemeral, and optionally a
    ``ttl`` in seconds (1 .. 2**32-1) that caps how long the relay keeps it undelivered and
    ``after``, the client id of the lane predecessor that must already be stored (the lane
    fence, ``docs/protocol-ws.md`` §3.1.4; not on ephemeral sends, never the send's own id)."""

    type: Literal["send"] = "send"
    id: Annotated[StrictStr, Field(pattern=CLIENT_ID_PATTERN)]
    payloads: list[PayloadIn] = Field(min_length=1)
    ephemeral: StrictBool = False
    ttl: Annotated[StrictInt, Field(ge=1, le=U32_MAX)] | None = Field(
        default=None, exclude_if=lambda ttl: ttl is None
    )
    after: Annotated[StrictStr, Field(pattern=CLIENT_ID_PATTERN)] | None = Field(
        default=None, exclude_if=lambda after: after is None
    )

    @model_validator(mode="after")
    def _fence(self) -> Self:
        if self.after is not None:
            if self.ephemeral:
                raise ValueError("an ephemeral send cannot name a predecessor ('after')")
            if self.after == self.id:
                raise ValueError("'after' names the send itself")
        return self


class AckFrame(_ClientFrame):
    """``ack``: queue sequence numbers received on this connection and stored by the client."""

    type: Literal["ack"] = "ack"
    seqs: list[Annotated[StrictInt, Field(ge=1)]] = Field(min_length=1, max_length=1000)


class PingFrame(_ClientFrame):
    """``ping``: answered with ``pong`` (application-level liveness)."""

    type: Literal["ping"] = "ping"
    id: StrictStr | None = Field(default=None, max_length=64)


ClientFrame = AuthFrame | SendFrame | AckFrame | PingFrame


# --- relay → client ----------------------------------------------------------------------


class _ServerFrame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DeviceRef(_ServerFrame):
    """``{"user": ..., "device": ...}`` in ``mismatch`` and ``error`` frames."""

    user: str
    device: int


class WsLimits(_ServerFrame):
    """The connection's limits, sent in ``ready``."""

    max_frame_bytes: int
    max_ciphertext_bytes: int
    max_recipients: int
    max_inflight: int
    max_pending_sends: int
    messages_per_second: float


class ReadyFrame(_ServerFrame):
    """Answer to a valid ``auth``."""

    type: Literal["ready"] = "ready"
    user: str
    device: int
    limits: WsLimits


class AcceptedFrame(_ServerFrame):
    """A ``send`` was committed (or repeated); ``envelope`` is ``None`` for ephemeral ones."""

    type: Literal["accepted"] = "accepted"
    id: str
    envelope: str | None
    ts: int
    ephemeral: bool = False


class MismatchFrame(_ServerFrame):
    """The send's device sets differ from the recipients' current ones; nothing stored."""

    type: Literal["mismatch"] = "mismatch"
    id: str
    missing: list[DeviceRef] = Field(default_factory=list)
    stale: list[DeviceRef] = Field(default_factory=list)


class ErrorFrame(_ServerFrame):
    """A frame was refused; ``code`` is an :class:`~wire.codes.ErrorCode` value (kept as
    ``str``: a newer relay may send codes this version does not know)."""

    type: Literal["error"] = "error"
    id: str | None = None
    code: str
    message: str = ""
    users: list[str] | None = None
    devices: list[DeviceRef] | None = None
    seqs: list[int] | None = None


class DeliverFrame(_ServerFrame):
    """A queued envelope for this device (ack its ``seq`` once stored)."""

    type: Literal["deliver"] = "deliver"
    seq: int = Field(ge=1)
    envelope: str
    sender: DeviceRef = Field(alias="from")
    ts: int
    data: str


class EphemeralFrame(_ServerFrame):
    """A live ephemeral send (typing): never stored, never acked."""

    type: Literal["ephemeral"] = "ephemeral"
    sender: DeviceRef = Field(alias="from")
    ts: int
    data: str


class PongFrame(_ServerFrame):
    """Answer to ``ping``."""

    type: Literal["pong"] = "pong"
    id: str | None = None


class PrekeysLowFrame(_ServerFrame):
    """This device's one-time prekey stock fell below the relay's threshold."""

    type: Literal["prekeys_low"] = "prekeys_low"
    one_time_prekeys: int
    one_time_pq_prekeys: int


class PrekeysDrainFrame(_ServerFrame):
    """This device's one-time prekeys were claimed as often as the relay allows in a window
    (``claims`` in ``window_seconds``): further bundles carry no one-time keys for now."""

    type: Literal["prekeys_drain"] = "prekeys_drain"
    claims: int
    window_seconds: int


ServerFrame = (
    ReadyFrame
    | AcceptedFrame
    | MismatchFrame
    | ErrorFrame
    | DeliverFrame
    | EphemeralFrame
    | PongFrame
    | PrekeysLowFrame
    | PrekeysDrainFrame
)


@functools.cache
def _server() -> TypeAdapter[ServerFrame]:
    return TypeAdapter(Annotated[ServerFrame, Field(discriminator="type")])


@functools.cache
def _client() -> TypeAdapter[ClientFrame]:
    return TypeAdapter(Annotated[ClientFrame, Field(discriminator="type")])


def parse_server_frame(text: str | bytes) -> ServerFrame:
    """One relay frame from its JSON text; raises :class:`WireDecodeError` (with field
    locations only, never the values) on anything else."""
    try:
        return _server().validate_json(text)
    except ValidationError as exc:
        raise WireDecodeError(_describe(exc)) from None


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """One client frame from its JSON text (strict); raises :class:`WireDecodeError`."""
    try:
        return _client().validate_json(text, strict=True)
    except ValidationError as exc:
        raise WireDecodeError(_describe(exc)) from None


def encode(frame: BaseModel) -> str:
    """Compact JSON text of a frame (aliases such as ``from`` applied)."""
    return json.dumps(frame.model_dump(mode="json", by_alias=True), separators=(",", ":"))


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        loc = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)
