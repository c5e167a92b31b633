"""The hot-path parser (``parse_frame``: ``send``/``ack`` validated into dicts with a schema
derived from the wire models) accepts and refuses exactly what the models do, with the same
error answers and the same values."""

from __future__ import annotations

import json
from typing import Any, Self

import pytest
from pydantic import model_validator

from server.delivery.frames import FrameError, _as_dicts, _plain, parse_frame, parse_text
from wire.frames import SendFrame

R = {"user": "bob", "device": 2}
P = {"data": "QUJD", "to": [R]}
S: dict[str, Any] = {"type": "send", "id": "m-1", "payloads": [P]}


def _with(**changes: Any) -> dict[str, Any]:
    return {**S, **changes}


FRAMES: list[Any] = [
    S,
    _with(ephemeral=True),
    _with(ephemeral=False, ttl=30, after="m-0"),
    _with(ttl=None, after=None),
    _with(ttl=1),
    _with(ttl=2**32 - 1),
    _with(payloads=[P, {"data": "", "to": [R, {"user": "carol", "device": 4294967295}]}]),
    # refused
    _with(ttl=0),
    _with(ttl=2**32),
    _with(ttl=1.0),
    _with(ttl="30"),
    _with(ttl=True),
    _with(after="m-1"),
    _with(after="m-0", ephemeral=True),
    _with(after=""),
    _with(after="x" * 65),
    _with(ephemeral="true"),
    _with(ephemeral=1),
    _with(ephemeral=None),
    _with(id=""),
    _with(id="a b"),
    _with(id=7),
    _with(id="x" * 65),
    _with(payloads=[]),
    _with(payloads=None),
    _with(payloads=[{"data": "QUJD", "to": []}]),
    _with(payloads=[{"data": "QUJD"}]),
    _with(payloads=[{"to": [R]}]),
    _with(payloads=[{"data": 5, "to": [R]}]),
    _with(payloads=[{"data": "QUJD", "to": [R], "extra": 1}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": "2"}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": True}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": 2.0}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": 0}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": 2**32}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "Bob", "device": 2}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bo", "device": 2}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"user": "bob", "device": 2, "x": 1}]}]),
    _with(payloads=[{"data": "QUJD", "to": [{"device": 2}]}]),
    _with(payloads=[{"data": "QUJD", "to": R}]),
    _with(extra=1),
    {k: v for k, v in S.items() if k != "id"},
    {k: v for k, v in S.items() if k != "type"},
    {"type": "ack", "seqs": [1, 2, 3]},
    {"type": "ack", "seqs": list(range(1, 1001))},
    {"type": "ack", "seqs": list(range(1, 1002))},
    {"type": "ack", "seqs": []},
    {"type": "ack", "seqs": [0]},
    {"type": "ack", "seqs": [True]},
    {"type": "ack", "seqs": [1.0]},
    {"type": "ack", "seqs": ["1"]},
    {"type": "ack", "seqs": [2**70]},
    {"type": "ack", "seqs": 1},
    {"type": "ack"},
    {"type": "ack", "seqs": [1], "id": "x"},
    {"type": "ping", "id": "p"},
    {"type": "ping"},
    {"type": "auth", "token": "t"},
    {"type": "nope"},
    {"type": 5},
    [S],
    "send",
    None,
]


def _outcome(parse: Any, text: str) -> Any:
    try:
        frame = parse(text)
    except FrameError as exc:
        return ("refused", exc.code, exc.message, exc.frame_id)
    return ("accepted", _plain(frame))


@pytest.mark.parametrize("frame", FRAMES, ids=range(len(FRAMES)))
def test_the_hot_parser_agrees_with_the_models(frame: Any) -> None:
    text = json.dumps(frame)
    assert _outcome(parse_frame, text) == _outcome(parse_text, text)


def test_send_and_ack_come_as_dicts_with_the_models_defaults() -> None:
    assert parse_frame(json.dumps(S)) == {
        "type": "send",
        "id": "m-1",
        "payloads": [{"data": "QUJD", "to": [{"user": "bob", "device": 2}]}],
        "ephemeral": False,
        "ttl": None,
        "after": None,
    }
    assert parse_frame('{"type":"ack","seqs":[5]}') == {"type": "ack", "seqs": [5]}


def test_malformed_json_is_refused_as_before() -> None:
    for text in ("{", "", "[1,", '{"type":"send"', "\x00"):
        assert _outcome(parse_frame, text) == _outcome(parse_text, text)


def test_a_model_validator_the_hot_parser_does_not_apply_stops_the_import() -> None:
    class Stricter(SendFrame):
        @model_validator(mode="after")
        def _short(self) -> Self:
            return self

    with pytest.raises(TypeError, match="unknown validator"):
        _as_dicts(Stricter.__pydantic_core_schema__)
