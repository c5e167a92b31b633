"""The pinned encodings of docs/vectors/protocol-client-content.json and
protocol-client-sync.json (also printed in docs/protocol-client.md §2): encoding reproduces
them, decoding reads them back; the doc prints the same bytes."""

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
    VerifiedContent,
    decode_content,
)
from crypto.errors import DecodeError

DOCS = Path(__file__).parents[2] / "docs"
VECTORS = json.loads((DOCS / "vectors/protocol-client-content.json").read_text())["vectors"]
SYNC = json.loads((DOCS / "vectors/protocol-client-sync.json").read_text())["vectors"]
HEAD: dict[str, Any] = {
    "message_id": bytes.fromhex("00112233445566778899aabbccddeeff"),
    "sent_at_ms": 1_700_000_000_000,
}


def build(v: dict[str, Any]) -> Content:
    if v["type"] == "verified":
        key = bytes.fromhex(v["account_key"])
        return VerifiedContent(username=v["username"], account_key=key, state=v["state"], **HEAD)
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


@pytest.mark.parametrize("vector", VECTORS + SYNC, ids=[v["name"] for v in VECTORS + SYNC])
def test_pinned_encoding(vector: dict[str, Any]) -> None:
    content = build(vector)
    assert content.to_bytes().hex() == vector["hex"]
    assert decode_content(bytes.fromhex(vector["hex"])) == content


def test_the_doc_prints_the_verified_and_unverified_vectors() -> None:
    doc = (DOCS / "protocol-client.md").read_text().replace(" ", "")
    assert [v["state"] for v in SYNC] == [1, 2]
    for vector in SYNC:
        assert vector["hex"] in doc


def test_a_verified_sync_with_a_bad_key_or_state_is_refused() -> None:
    good = bytes.fromhex(SYNC[0]["hex"])
    key_at = good.index(bytes.fromhex(SYNC[0]["account_key"]))
    for bad in (
        good[:-1] + b"\x03",  # unknown state (1 verified, 2 unverified)
        good[:-1] + b"\x00",
        good[:key_at] + b"\x01" + good[key_at + 1 :],  # an X25519 prefix, not Ed25519
        good[:-2],  # truncated
        good + b"\x00",  # trailing byte
    ):
        with pytest.raises(DecodeError):
            decode_content(bad)
    with pytest.raises(DecodeError):
        VerifiedContent(username="bob", account_key=b"\x02" + bytes(31), **HEAD).to_bytes()


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
