"""The SDK writes its own WebSocket frames (:func:`clients.sdk.transport.text_frames`): they must
be what RFC 6455 asks of a client — unfragmented text frames, masked with a fresh key each —
as websockets' server-side parser reads them, at every length encoding."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from clients.sdk.transport import text_frames


def _parse(data: bytes, count: int) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    for _ in range(count):
        parser: Generator[None, None, Frame] = Frame.parse(
            reader.read_exact, mask=True, max_size=None
        )
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:  # pragma: no cover - the data is complete
            raise AssertionError("incomplete frame")
    assert not reader.buffer  # nothing left over
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frames_of_every_length_encoding_parse_as_masked_text(size: int) -> None:
    texts = ["x" * size, "é€😀" + "y" * size, '{"type":"ack","seqs":[1]}']
    data = text_frames(texts)
    frames = _parse(data, len(texts))
    assert [f.opcode for f in frames] == [Opcode.TEXT] * len(texts)
    assert all(f.fin and not (f.rsv1 or f.rsv2 or f.rsv3) for f in frames)
    assert [bytes(f.data).decode() for f in frames] == texts


def test_every_frame_is_masked_with_its_own_key() -> None:
    texts = ["a" * 40] * 8
    data = text_frames(texts)
    step = 2 + 4 + 40
    assert len(data) == step * len(texts)
    heads = [data[i : i + 2] for i in range(0, len(data), step)]
    assert all(h[1] & 0x80 for h in heads)  # the MASK bit (a server closes on a bare frame)
    keys = {data[i + 2 : i + 6] for i in range(0, len(data), step)}
    assert len(keys) == len(texts)  # fresh keys (a repeat among 8 random 32-bit keys: ~1e-8)
    assert b"a" * 40 not in data  # the payloads are masked on the wire


def test_no_text_is_no_bytes() -> None:
    assert text_frames([]) == b""
