"""The relay's own text-frame writer (``connection._append_text_frame``) produces exactly
the bytes websockets' ``send_text`` does, and defers to it whenever it would not."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.delivery.connection import DeviceConnection, _append_text_frame
from tests.server.ws_kit import open_ws, world
from wire.encoding import b64


def _open() -> ServerProtocol:
    conn = ServerProtocol(max_size=None)
    conn.state = State.OPEN
    return conn


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("char", ["a", "é", "\U0001f600"])
def test_the_bytes_are_websockets_own(size: int, char: str) -> None:
    text = char * (size // len(char.encode()))  # about ``size`` bytes of UTF-8
    ours, theirs = _open(), _open()
    _append_text_frame(ours, text)
    _append_text_frame(ours, "tail")
    theirs.send_text(text.encode())
    theirs.send_text(b"tail")
    assert b"".join(ours.data_to_send()) == b"".join(theirs.data_to_send())


def test_anything_unusual_is_left_to_websockets() -> None:
    closing = _open()
    closing.state = State.CLOSING
    with pytest.raises(Exception, match="closing"):
        _append_text_frame(closing, "late")
    fragmented = _open()
    fragmented.send_text(b"first", fin=False)
    with pytest.raises(Exception, match="continuation"):
        _append_text_frame(fragmented, "interleaved")
    compressed = _open()
    compressed.extensions = [PerMessageDeflate(False, False, 15, 15)]
    plain = _open()
    _append_text_frame(compressed, "hello " * 50)
    _append_text_frame(plain, "hello " * 50)
    assert b"".join(compressed.data_to_send()) != b"".join(plain.data_to_send())


async def test_the_relay_serves_its_sockets_through_the_direct_path(tmp_path: Path) -> None:
    """On the relay's own server every connection has the sans-I/O protocol (so frames take
    the direct path; a websockets or uvicorn upgrade that renamed what it relies on would
    silently fall back to the slow per-frame path), and what it writes parses."""
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            sinks = w.relay.state.hub.local_sinks()
            assert len(sinks) == 2
            assert all(isinstance(s, DeviceConnection) and s._proto is not None for s in sinks)
            for i, size in enumerate([10, 1000, 100_000]):  # every length class of header
                await a.send_message(f"m{i}", [(b"x" * size, [bob])])
                await a.expect("accepted")
                got = await b.expect("deliver")
                assert got["data"] == b64(b"x" * size)
