"""The content format and relay payload frame: exact bytes, round trips, hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.sdk.content import (
    AttachmentContent,
    DevicesChanged,
    GroupAction,
    GroupUpdate,
    PayloadKind,
    Receipt,
    ReceiptKind,
    RelayPayload,
    SenderKeyContent,
    TextContent,
    Transcript,
    Typing,
    decode_content,
    decode_padded,
    padded,
)
from clients.sdk.errors import LinkError
from clients.sdk.linking import format_code, parse_code
from crypto.errors import DecodeError

MID = bytes.fromhex("a99d8543039507ed6de4de7d15dcb436")


def test_text_content_encodes_to_the_documented_bytes() -> None:
    content = TextContent(text="hi", message_id=MID, sent_at_ms=5)
    expected = bytes.fromhex(
        "01010010a99d8543039507ed6de4de7d15dcb43600000000000000050000000000026869"
    )
    assert content.to_bytes() == expected
    assert decode_content(expected) == content


SAMPLES = [
    TextContent(text="héllo", group_id=b"g" * 16, message_id=MID, sent_at_ms=1),
    AttachmentContent(pointer=b"\x01" * 100, caption="cap", message_id=MID, sent_at_ms=2),
    Receipt(kind=ReceiptKind.READ, ids=(MID, MID[::-1]), message_id=MID, sent_at_ms=3),
    Typing(active=True, message_id=MID, sent_at_ms=4),
    GroupUpdate(
        group_id=b"G" * 16,
        epoch=7,
        name="team",
        action=GroupAction.REMOVE,
        members=("alice", "bob"),
        message_id=MID,
        sent_at_ms=5,
    ),
    SenderKeyContent(group_id=b"G" * 16, distribution=b"d" * 90, message_id=MID, sent_at_ms=6),
    Transcript(destination="bob", inner=TextContent(text="x", message_id=MID), message_id=MID),
    DevicesChanged(message_id=MID, sent_at_ms=8),
]


@pytest.mark.parametrize("content", SAMPLES, ids=lambda c: type(c).__name__)
def test_every_content_type_round_trips(content: object) -> None:
    data = content.to_bytes()  # type: ignore[attr-defined]
    assert decode_content(data) == content
    with pytest.raises(DecodeError):
        decode_content(data + b"\x00")
    with pytest.raises(DecodeError):
        decode_content(data[:-1] if len(data) > 28 else data[:10])


def test_unknown_versions_types_and_kinds_are_refused() -> None:
    good = SAMPLES[0].to_bytes()
    with pytest.raises(DecodeError):
        decode_content(b"\x02" + good[1:])
    with pytest.raises(DecodeError):
        decode_content(good[:1] + b"\x7f" + good[2:])
    with pytest.raises(DecodeError):
        RelayPayload.from_bytes(b"\x01\x09data")
    assert RelayPayload.from_bytes(b"\x01\x02xyz") == RelayPayload(PayloadKind.GROUP, b"xyz")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_content(data)
    with contextlib.suppress(DecodeError):
        RelayPayload.from_bytes(data)


def test_link_codes_round_trip_and_reject_garbage() -> None:
    code = format_code("alice", 12345, b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99")
    assert code.startswith("alice:12345:") and code.count("-") == 3
    assert parse_code(code.lower()) == ("alice", 12345, bytes.fromhex("00112233445566778899"))
    for bad in (
        "",
        "alice",
        "alice:1",
        "Alice:1:AAAA",
        "alice:x:AAAA-AAAA-AAAA-AAAA",
        "alice:1:AAAA",
    ):
        with pytest.raises(LinkError):
            parse_code(bad)


def test_padding_hides_the_length_to_within_160_bytes() -> None:
    short = TextContent(text="y", message_id=MID, sent_at_ms=5)
    assert padded(short) == short.to_bytes() + b"\x80" + bytes(160 - len(short.to_bytes()) - 1)
    lengths = {len(padded(TextContent(text="x" * n, sent_at_ms=1))) for n in range(0, 120)}
    assert lengths == {160}
    assert len(padded(TextContent(text="x" * 200, sent_at_ms=1))) == 320
    # A content that fills a block exactly still gets a marker (and a whole block of padding).
    exact = TextContent(text="x" * (160 - 34), sent_at_ms=1)
    assert len(exact.to_bytes()) == 160 and len(padded(exact)) == 320


@given(st.text(max_size=600), st.booleans())
def test_padded_contents_round_trip(text: str, active: bool) -> None:
    for content in (TextContent(text=text, sent_at_ms=7), Typing(active=active, sent_at_ms=0)):
        data = padded(content)
        assert len(data) % 160 == 0
        assert decode_padded(data) == content


@pytest.mark.parametrize(
    "tail",
    [b"", b"\x00" * 10, b"\x81" + bytes(10), b"\x80" + bytes(160)],
    ids=["no-marker", "zeros-only", "wrong-marker", "too-long"],
)
def test_bad_padding_is_a_decode_error(tail: bytes) -> None:
    body = TextContent(text="hi", message_id=MID, sent_at_ms=5).to_bytes()
    with pytest.raises(DecodeError):
        decode_padded(body + tail)
