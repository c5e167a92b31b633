"""The relay speaks :mod:`wire`: it defines no protocol shape or code of its own.

The relay imports its REST bodies, frames, error codes and close codes from :mod:`wire`
(``tests/test_architecture.py`` has the package import rules); these tests check, on the
source, that no duplicate creeps back in (no pydantic model outside ``server/settings.py``,
every error code the relay raises is a wire enum member), that the frames the relay builds
by hand parse as wire's server frames, and that every code is documented.
"""

from __future__ import annotations

import ast
import doctest
import json
import re
from pathlib import Path

import pytest

import server.delivery.frames as relay_frames
import wire
from wire import codes, frames
from wire.encoding import WireDecodeError, b64, unb64

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "server"
_ERROR_CLASSES = {
    "DomainError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Gone",
    "PayloadTooLarge",
    "RateLimited",
    "InsufficientStorage",
    "Unavailable",
}


def _trees() -> list[tuple[Path, ast.AST]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in SERVER.rglob("*.py")]


def test_the_relay_defines_no_pydantic_model_of_its_own() -> None:
    found = []
    for path, tree in _trees():
        if path.name == "settings.py":  # configuration, not protocol
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) in {"BaseModel", "pydantic.BaseModel"} for base in node.bases
            ):
                found.append(f"{path.relative_to(REPO)}:{node.name}")
    assert found == [], "protocol shapes belong in wire/ (wire.rest / wire.frames)"


def _literal_codes() -> set[tuple[str, str]]:
    """Every ``code="..."`` passed to a domain error of the relay (REST codes)."""
    found = set()
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in _ERROR_CLASSES
            ):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                        found.add((str(path.relative_to(REPO)), str(kw.value.value)))
    return found


def test_every_rest_error_code_the_relay_raises_is_a_wire_code() -> None:
    used = _literal_codes()
    assert used
    known = {c.value for c in codes.RestErrorCode}
    assert {(where, code) for where, code in used if code not in known} == set()


def test_ws_error_frames_and_close_codes_come_from_wire() -> None:
    """``FrameError`` / ``error_frame`` take :class:`wire.codes.ErrorCode` (mypy enforces
    it); no module of the relay spells a close code number or redefines ``CloseCode``."""
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.name not in {"CloseCode", "ErrorCode", "RestErrorCode"}, path
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("close"):
                for arg in node.args[:1]:
                    assert not (isinstance(arg, ast.Constant) and isinstance(arg.value, int)), (
                        f"{path.relative_to(REPO)}:{node.lineno}: use wire.codes.CloseCode"
                    )


def test_frames_the_relay_builds_parse_as_wire_server_frames() -> None:
    error = frames.parse_server_frame(
        relay_frames.error_frame(codes.ErrorCode.UNKNOWN_USER, "no such user", "m1", users=["zed"])
    )
    assert isinstance(error, frames.ErrorFrame)
    assert (error.id, error.code, error.users) == ("m1", codes.ErrorCode.UNKNOWN_USER, ["zed"])
    tail = relay_frames.deliver_tail("e" * 32, "alice", 7, 1234, b64(b"\x01\x02"))
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
        send.model_copy(update={"ttl": 30}),
        send.model_copy(update={"after": "prev"}),
        frames.AckFrame(seqs=[1, 2]),
        frames.PingFrame(id="p"),
        frames.AuthFrame(token="t"),
    ):
        parsed = relay_frames.parse_text(frames.encode(frame))
        assert parsed == frame


def _doc_codes(doc: str, heading: str | None = None) -> set[str]:
    text = (REPO / "docs" / doc).read_text()
    if heading is not None:
        text = text[text.index(heading) :]
        text = text[: text.index("\n#", 1)]
    return set(re.findall(r"`(?:\d{3}\s)?([a-z0-9_]+)`", text))


def test_every_wire_error_code_is_documented() -> None:
    ws = _doc_codes("protocol-ws.md", "### 4.2 Error codes")
    missing_ws = {c.value for c in codes.ErrorCode} - ws - {"malformed", "rate_limited"}
    assert missing_ws == set()
    rest_doc = _doc_codes("protocol-relay.md") | _doc_codes("protocol-ws.md")
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
