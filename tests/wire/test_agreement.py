"""The relay's own pydantic models and :mod:`wire` describe the same protocol.

Until the relay imports :mod:`wire` itself, these tests keep the two from drifting: every
REST body and client frame the relay validates has the same JSON schema in :mod:`wire`
(descriptions aside), and the frames the relay builds parse as :mod:`wire`'s server frames.
"""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import server.delivery.frames as relay_frames
import server.schemas as relay_schemas
import wire
from server.attachments.routes import AttachmentCreated as RelayAttachmentCreated
from server.delivery.connection import CloseCode as RelayCloseCode
from wire import codes, frames, rest
from wire.encoding import WireDecodeError, b64, unb64

REPO = Path(__file__).resolve().parents[2]


def _schema(model: type[BaseModel], *, client_frame: bool = False) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "description"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    schema = strip(model.model_json_schema())
    if client_frame:  # wire gives ``type`` its value as a default; the relay dispatches on it
        schema.get("properties", {}).get("type", {}).pop("default", None)
        required = schema.get("required", [])
        if "type" not in required:
            schema["required"] = ["type", *required]
    return schema


REST_MODELS = sorted(
    name
    for name in relay_schemas.__all__
    if isinstance(getattr(relay_schemas, name), type)
    and issubclass(getattr(relay_schemas, name), BaseModel)
)


def test_every_relay_rest_model_is_in_wire() -> None:
    assert REST_MODELS
    assert set(REST_MODELS) <= set(rest.__all__)


@pytest.mark.parametrize("name", REST_MODELS)
def test_rest_bodies_have_the_relays_json_schema(name: str) -> None:
    assert _schema(getattr(rest, name)) == _schema(getattr(relay_schemas, name))


def test_attachment_answer_has_the_relays_json_schema() -> None:
    assert _schema(rest.AttachmentCreated) == _schema(RelayAttachmentCreated)


@pytest.mark.parametrize("name", ["AuthFrame", "SendFrame", "AckFrame", "PingFrame", "Recipient"])
def test_client_frames_have_the_relays_json_schema(name: str) -> None:
    relay = _schema(getattr(relay_frames, name))
    ours = _schema(getattr(frames, name), client_frame=name.endswith("Frame"))
    assert ours == relay


def test_the_relays_close_codes_are_wires() -> None:
    relay = {k: v for k, v in vars(RelayCloseCode).items() if k.isupper()}
    assert relay
    assert {k: codes.CloseCode[k].value for k in relay} == relay


def test_frames_the_relay_builds_parse_as_wire_server_frames() -> None:
    error = frames.parse_server_frame(
        relay_frames.error_frame("unknown_user", "no such user", "m1", users=["zed"])
    )
    assert isinstance(error, frames.ErrorFrame)
    assert (error.id, error.code, error.users) == ("m1", codes.ErrorCode.UNKNOWN_USER, ["zed"])
    tail = relay_frames.deliver_tail("e" * 32, "alice", 7, 1234, relay_frames.b64(b"\x01\x02"))
    deliver = frames.parse_server_frame(relay_frames.Delivery(42, tail).text)
    assert isinstance(deliver, frames.DeliverFrame)
    assert (deliver.seq, deliver.sender.user, deliver.sender.device, deliver.ts) == (
        42,
        "alice",
        7,
        1234,
    )
    assert unb64(deliver.data) == b"\x01\x02"


def test_client_frames_wire_builds_are_accepted_by_the_relays_parser() -> None:
    send = frames.SendFrame(
        id="abc",
        payloads=[frames.PayloadIn(data=b64(b"x"), to=[frames.Recipient(user="bob", device=2)])],
    )
    for frame in (
        send,
        frames.AckFrame(seqs=[1, 2]),
        frames.PingFrame(id="p"),
        frames.AuthFrame(token="t"),
    ):
        parsed = relay_frames.parse_text(frames.encode(frame))
        assert parsed.model_dump() == frame.model_dump()


def _doc_codes(doc: str, heading: str) -> set[str]:
    text = (REPO / "docs" / doc).read_text()
    section = text[text.index(heading) :]
    section = section[: section.index("\n#", 1)]
    return set(re.findall(r"`([a-z0-9_]+)`", section))


def test_every_wire_error_code_is_documented() -> None:
    ws = _doc_codes("protocol-ws.md", "### 4.2 Error codes")
    missing_ws = {c.value for c in codes.ErrorCode} - ws - {"malformed", "rate_limited"}
    assert missing_ws == set()
    rest_doc = _doc_codes("protocol-relay.md", "### Errors")
    assert {c.value for c in codes.RestErrorCode} - rest_doc - {"too_large"} == set()
    close = set(
        map(int, re.findall(r"^\| (\d{4}) \|", (REPO / "docs/protocol-ws.md").read_text(), re.M))
    )
    assert {int(c) for c in codes.CloseCode} - close == {codes.CloseCode.ABNORMAL}


def test_base64_is_strict_both_ways() -> None:
    assert b64(b"\x00\xff") == "AP8="
    assert unb64("AP8=") == b"\x00\xff"
    for bad in ("AP8", "AP 8=", "_-8=", "é"):
        with pytest.raises(WireDecodeError):
            unb64(bad)


def test_a_server_frame_that_is_not_one_raises_the_wire_error() -> None:
    for bad in ("[]", "{}", '{"type":"deliver","seq":"1"}', "not json", '{"type":"nope"}'):
        with pytest.raises(WireDecodeError):
            frames.parse_server_frame(bad)


def test_deliver_frames_round_trip_with_the_from_alias() -> None:
    text = (
        '{"type":"deliver","seq":3,"envelope":"e","from":{"user":"al","device":1},"ts":9,"data":""}'
    )
    frame = frames.parse_server_frame(text)
    assert json.loads(frames.encode(frame)) == json.loads(text)


def test_the_package_docstring_runs() -> None:
    assert doctest.testmod(wire).failed == 0
