"""The pinned encodings of docs/vectors/protocol-client-content.json (also printed in
docs/protocol-client.md §2): encoding reproduces them, decoding reads them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clients.sdk.content import (
    Content,
    DeleteContent,
    EditContent,
    Quote,
    ReactionContent,
    TextContent,
    TimerContent,
    decode_content,
)
from crypto.errors import DecodeError

VECTORS = json.loads(
    (Path(__file__).parents[2] / "docs/vectors/protocol-client-content.json").read_text()
)["vectors"]
HEAD: dict[str, Any] = {
    "message_id": bytes.fromhex("00112233445566778899aabbccddeeff"),
    "sent_at_ms": 1_700_000_000_000,
}


def build(v: dict[str, Any]) -> Content:
    group_id = bytes.fromhex(v["group_id"])
    target = bytes.fromhex(v.get("target", ""))
    if v["type"] == "edit":
        return EditContent(target=target, text=v["text"], group_id=group_id, **HEAD)
    if v["type"] == "delete":
        return DeleteContent(target=target, group_id=group_id, **HEAD)
    if v["type"] == "reaction":
        return ReactionContent(target=target, emoji=v["emoji"], group_id=group_id, **HEAD)
    if v["type"] == "timer":
        return TimerContent(seconds=v["seconds"], group_id=group_id, **HEAD)
    q = v["quote"]
    quote = Quote(bytes.fromhex(q["id"]), q["author"], q["excerpt"])
    return TextContent(text=v["text"], quote=quote, expire=v["expire"], group_id=group_id, **HEAD)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_pinned_encoding(vector: dict[str, Any]) -> None:
    content = build(vector)
    assert content.to_bytes().hex() == vector["hex"]
    assert decode_content(bytes.fromhex(vector["hex"])) == content


def test_a_text_without_extensions_is_encoded_as_before() -> None:
    plain = TextContent(text="hi", **HEAD)
    assert plain.to_bytes().hex().endswith("0000000000026869")  # no extension bytes


def test_unknown_extensions_are_skipped_and_bad_values_refused() -> None:
    base = TextContent(text="hi", **HEAD).to_bytes()
    assert decode_content(base + bytes.fromhex("7f0002abcd")) == TextContent(text="hi", **HEAD)
    with pytest.raises(DecodeError):
        decode_content(base + bytes.fromhex("02000400000001"))  # a 1 s timer: out of range
    with pytest.raises(DecodeError):
        TimerContent(seconds=10, **HEAD).to_bytes()
    with pytest.raises(DecodeError):
        decode_content(bytes.fromhex(VECTORS[0]["hex"])[:-1])  # truncated
