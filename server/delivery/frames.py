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
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs
from typing_extensions import TypedDict

from wire.codes import ErrorCode
from wire.encoding import b64
from wire.frames import AckFrame, AuthFrame, ClientFrame, PingFrame, SendFrame

__all__ = [
    "AckIn",
    "ClientFrame",
    "Delivery",
    "FrameError",
    "PayloadInDict",
    "RecipientIn",
    "SendIn",
    "as_dict",
    "canonical_b64",
    "decode_b64",
    "deliver_tail",
    "dumps",
    "error_frame",
    "parse_client_frame",
    "parse_frame",
    "parse_json",
    "parse_text",
]


class FrameError(Exception):
    """A client frame is not acceptable; ``code`` is the wire error code."""

    def __init__(self, code: ErrorCode, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


_MODELS: dict[str, type[BaseModel]] = {
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
        raise FrameError(ErrorCode.MALFORMED, "frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.MALFORMED, "frame must be a JSON object")
    return value


def parse_client_frame(value: dict[str, Any]) -> ClientFrame:
    """Validate a decoded frame object against its ``type``'s schema."""
    raw_id = value.get("id")
    frame_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    kind = value.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_FRAME, "frame has no string 'type'", frame_id)
    model = _MODELS.get(kind)
    if model is None:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:32]!r}", frame_id)
    try:
        return model.model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise FrameError(ErrorCode.BAD_FRAME, _describe(exc), frame_id) from None


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


# --- the hot path: ``send`` and ``ack`` validated into plain dicts ---------------------------
#
# Building the frozen models (a ``SendFrame`` holds ``PayloadIn`` and ``Recipient`` models) is
# ~40 % of validating a ``send`` frame. The relay reads these two frames by the thousand per
# second, so it validates them with a schema *derived from the models' own core schemas*
# (:func:`_as_dicts`: every field, type, constraint, default and ``extra="forbid"`` carried over,
# models replaced by typed dicts), not a second hand-written copy that could drift. The one
# model-level validator (``SendFrame._fence``) is applied in :func:`parse_frame`; any other
# validator added to these models stops the import (``_as_dicts`` refuses what it cannot carry).


class RecipientIn(TypedDict):
    """A validated ``Recipient`` (same constraints as :class:`wire.frames.Recipient`)."""

    user: str
    device: int


class PayloadInDict(TypedDict):
    """A validated ``PayloadIn``."""

    data: str
    to: list[RecipientIn]


class SendIn(TypedDict):
    """A validated ``send`` frame (defaults filled in, as on :class:`wire.frames.SendFrame`)."""

    type: Literal["send"]
    id: str
    payloads: list[PayloadInDict]
    ephemeral: bool
    ttl: int | None
    after: str | None


class AckIn(TypedDict):
    """A validated ``ack`` frame."""

    type: Literal["ack"]
    seqs: list[int]


#: Model-level validators the derived schema knows how to apply (in ``parse_frame``).
_KNOWN_VALIDATORS = {SendFrame._fence}
#: Scalar core-schema types carried over as they are.
_SCALARS = frozenset({"str", "int", "bool", "literal"})


def _as_dicts(schema: Any) -> Any:
    """A model's core schema with every model turned into a typed dict with the same fields,
    constraints, defaults and extra-field rule; raises ``TypeError`` on anything else."""
    kind = schema["type"]
    if kind == "function-after":
        function = schema["function"]["function"]
        if getattr(function, "__func__", function) not in _KNOWN_VALIDATORS:
            raise TypeError(f"unknown validator {function!r}: teach parse_frame to apply it")
        return _as_dicts(schema["schema"])
    if kind == "model":
        fields_schema = schema["schema"]
        config = schema.get("config", {})
        if fields_schema["type"] != "model-fields" or set(config) - {
            "extra_fields_behavior",
            "strict",
            "title",
        }:
            raise TypeError(f"cannot carry over model {schema.get('cls')!r}")
        fields = {}
        for name, field in fields_schema["fields"].items():
            if set(field) - {"type", "schema", "metadata", "serialization_exclude_if"}:
                raise TypeError(f"cannot carry over field {name!r} ({sorted(field)})")
            inner = field["schema"]
            fields[name] = cs.typed_dict_field(
                _as_dicts(inner), required=inner["type"] != "default"
            )
        return cs.typed_dict_schema(
            fields,
            extra_behavior=config.get("extra_fields_behavior"),
            strict=config.get("strict"),
        )
    out = {k: v for k, v in schema.items() if k not in ("metadata", "ref")}
    if kind == "list":
        out["items_schema"] = _as_dicts(schema["items_schema"])
    elif kind in ("default", "nullable"):
        out["schema"] = _as_dicts(schema["schema"])
    elif kind not in _SCALARS:
        raise TypeError(f"cannot carry over a {kind!r} schema")
    return out


_HOT = SchemaValidator(
    cs.tagged_union_schema(
        {
            "send": _as_dicts(SendFrame.__pydantic_core_schema__),
            "ack": _as_dicts(AckFrame.__pydantic_core_schema__),
        },
        discriminator="type",
    )
)


def parse_frame(text: str) -> SendIn | AckIn | ClientFrame:
    """A frame of an authenticated connection: ``send`` and ``ack`` as validated dicts (the
    same rules as :class:`~wire.frames.SendFrame` and :class:`~wire.frames.AckFrame`), any
    other type as its model; raises :class:`FrameError` exactly as :func:`parse_text`."""
    try:
        frame = _HOT.validate_json(text, strict=True)
    except ValidationError:
        pass
    else:
        after = frame.get("after")
        if after is None or not (frame["ephemeral"] or after == frame["id"]):
            return cast("SendIn | AckIn", frame)
    model = parse_text(text)  # raises the precise FrameError
    if isinstance(model, SendFrame | AckFrame):  # pragma: no cover - the schemas are the same
        return cast("SendIn | AckIn", as_dict(model))
    return model


def as_dict(frame: SendFrame | AckFrame) -> Any:
    """A ``send``/``ack`` model as the dict :func:`parse_frame` gives for it (every field,
    ``None`` ones included)."""
    return _plain(frame)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


#: pydantic-core's base64 decoder (Rust): a JSON string → its bytes. It accepts more than
#: strict standard base64 (no padding, the URL-safe alphabet) and refuses some of it (unused
#: bits that are not zero), so :func:`decode_b64` gives it only well-formed standard text and
#: leaves everything it refuses to ``binascii``.
_B64_DECODER = SchemaValidator(cs.bytes_schema(), config=cs.CoreConfig(val_json_bytes="base64"))
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def decode_b64(data: str, frame_id: str | None) -> bytes:
    """Strict standard base64 (with padding) → bytes.

    Exactly what ``binascii.a2b_base64(data, strict_mode=True)`` accepts and returns (property
    test: ``tests/server/test_frames_b64.py``), a few times faster for a payload: text made of
    the standard alphabet with at most two ``=`` at its end, in groups of four (checked with
    one ``bytes.translate``), is decoded by pydantic-core's decoder (a fifth of ``binascii``'s
    time for 1 KiB); anything else, or anything that decoder refuses, by ``binascii``."""
    raw = data.encode()
    pads = raw.translate(None, _B64_CHARS)  # every byte that is not in the alphabet
    if (not pads or pads == b"=" or pads == b"==") and raw.endswith(pads) and len(raw) % 4 == 0:
        try:
            return _B64_DECODER.validate_json(b'"' + raw + b'"')  # type: ignore[no-any-return]
        except ValidationError:
            pass  # e.g. unused bits set: strict binascii decides
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise FrameError(
            ErrorCode.BAD_BASE64, "payload data is not valid standard base64", frame_id
        ) from None


_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: Characters that may stand before ``==`` / ``=`` in canonical base64: the bits past the
#: last whole byte are zero (strict decoding accepts ``QR==`` as well as ``QQ==``).
_BEFORE_TWO_PADS = frozenset(_B64_ALPHABET[::16])
_BEFORE_ONE_PAD = frozenset(_B64_ALPHABET[::4])


def canonical_b64(text: str, data: bytes) -> str:
    """The standard base64 of ``data``, which strictly decoded from ``text``: ``text`` itself
    when it is that encoding already (every client's is; no second encoding pass), else the
    re-encoded form, so that a ``deliver`` frame's ``data`` never depends on how the sender
    spelled the unused bits."""
    if text.endswith("=="):
        canonical = text[-3] in _BEFORE_TWO_PADS
    elif text.endswith("="):
        canonical = text[-2] in _BEFORE_ONE_PAD
    else:
        canonical = True
    return text if canonical else b64(data)


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON text of a server frame."""
    return json.dumps(frame, separators=(",", ":"))


def error_frame(code: ErrorCode, message: str, frame_id: str | None = None, **extra: Any) -> str:
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
