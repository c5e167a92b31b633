"""The SDK's resumable attachment uploads (docs/protocol-ws.md §9.1) through a real relay on
loopback whose chunk size is its minimum (64 KiB), with a TCP proxy between the uploading
client and the relay that records every chunk's ``Upload-Offset`` and can cut a chunk's
connection midway or refuse chunks altogether; and the one-shot upload against a relay
without resumable uploads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.routing import Route

from clients.sdk import AttachmentError, Event, Message, RelayUnavailable, VoxClient
from clients.sdk import attachments as sdk_attachments
from crypto.attachments import ciphertext_size, padded_size
from server.app import create_app
from tests.clients.kit import wait_for
from tests.server.relay_harness import Relay, make_settings, running_relay

CHUNK = 64 * 1024
_OFFSET = re.compile(rb"\r\nupload-offset: *(\d+)\r\n", re.IGNORECASE)
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.IGNORECASE)
_UPGRADE = re.compile(rb"\r\nupgrade: *websocket\r\n", re.IGNORECASE)


class Proxy:
    """A TCP proxy on loopback. ``offsets()``: the ``Upload-Offset`` of every chunk request
    that went through, in order. ``cut_patch = n``: the n-th chunk request (1-based) is
    cut off after ``cut_bytes`` of it went through. ``refuse``: requests starting with it
    get their connection closed before anything reaches the relay."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listen_port = 0
        self.patches = 0
        self.cut_patch: int | None = None
        self.cut_bytes = 20_000
        self.refuse: tuple[bytes, ...] = ()
        self.patch_offsets: list[int] = []
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def offsets(self) -> list[int]:
        return list(self.patch_offsets)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()  # the relay closed it (e.g. idle keep-alive): so does the client

        back = asyncio.create_task(downstream())
        budget: int | None = None
        body_left = 0  # bytes of the current request's body still to come
        try:
            while data := await reader.read(65536):
                if body_left > 0:  # body bytes: never taken for a request head
                    body_left -= len(data)
                else:  # a request head, which comes in one piece
                    if self.refuse and data.startswith(self.refuse):
                        break
                    end = data.index(b"\r\n\r\n") + 4
                    length = _LENGTH.search(data, 0, end)
                    body_left = (int(length[1]) if length else 0) - (len(data) - end)
                    if _UPGRADE.search(data, 0, end):  # WebSocket frames follow, not requests
                        body_left = 1 << 62
                    if data.startswith(b"PATCH "):
                        head = _OFFSET.search(data, 0, end)
                        assert head is not None
                        self.patch_offsets.append(int(head[1]))
                        self.patches += 1
                        if self.patches == self.cut_patch:
                            budget = self.cut_bytes
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                up_writer.write(data)
                await up_writer.drain()
                if budget == 0:
                    break
        except ConnectionError:
            pass
        finally:
            # Abort both sides: the relay sees its chunk end early, the client a lost connection.
            for w in (writer, up_writer):
                w.transport.abort()
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await back


def part_files(relay: Relay) -> list[Path]:
    """The relay's unfinished uploads (one part file each)."""
    uploads = relay.settings.data_dir.resolve() / "attachments" / "uploads"
    return sorted(uploads.glob("*.part")) if uploads.exists() else []


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    settings = make_settings(tmp_path, limits={"max_upload_chunk_bytes": CHUNK})
    async with running_relay(settings) as r:
        yield r


@pytest.fixture
async def proxy(relay: Relay) -> AsyncIterator[Proxy]:
    p = Proxy(relay.port)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_pause(attempt: int) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(sdk_attachments, "_pause", no_pause)


@dataclass
class Pair:
    """Alice (through the proxy) and bob (direct), connected; bob's events."""

    alice: VoxClient
    bob: VoxClient
    events: list[Event]


@pytest.fixture
async def pair(relay: Relay, proxy: Proxy, tmp_path: Path) -> AsyncIterator[Pair]:
    alice = await VoxClient.register(tmp_path / "alice", proxy.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
    p = Pair(alice, bob, [])
    bob.on_event(p.events.append)
    try:
        await alice.connect()
        await bob.connect()
        yield p
    finally:
        await p.alice.close()  # a test may have reopened alice
        await bob.close()


@pytest.fixture
async def alice(proxy: Proxy, tmp_path: Path) -> AsyncIterator[VoxClient]:
    """Alice alone, through the proxy, not connected."""
    client = await VoxClient.register(tmp_path / "alice", proxy.base_url, "alice")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def photo(tmp_path: Path) -> tuple[Path, bytes]:
    """A 300,000-byte file of random bytes (five chunks once encrypted) and its content."""
    data = os.urandom(300_000)
    source = tmp_path / "photo.bin"
    source.write_bytes(data)
    return source, data


async def received_intact(bob: VoxClient, events: list[Event], data: bytes, dest: Path) -> None:
    await wait_for(lambda: any(isinstance(e, Message) and e.attachment for e in events))
    message = next(e for e in events if isinstance(e, Message) and e.attachment)
    out = await bob.download(message, dest)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


async def test_a_multi_chunk_file_goes_up_chunk_by_chunk_and_arrives_intact(
    relay: Relay, proxy: Proxy, pair: Pair, photo: tuple[Path, bytes], tmp_path: Path
) -> None:
    source, data = photo
    total = ciphertext_size(padded_size(len(data)))
    progress: list[tuple[int, int]] = []
    await pair.alice.send_file("bob", source, progress=lambda d, t: progress.append((d, t)))
    chunks = -(-total // CHUNK)
    assert chunks >= 5
    assert proxy.offsets() == [i * CHUNK for i in range(chunks)]
    # Progress is what the relay confirmed, chunk by chunk.
    assert progress == [(min((i + 1) * CHUNK, total), total) for i in range(chunks)]
    assert part_files(relay) == []
    await received_intact(pair.bob, pair.events, data, tmp_path / "got.bin")


async def test_a_connection_cut_mid_chunk_resumes_at_the_relays_offset(
    relay: Relay, proxy: Proxy, pair: Pair, photo: tuple[Path, bytes], tmp_path: Path
) -> None:
    source, data = photo
    proxy.cut_patch = 3  # the third chunk's connection dies 20,000 bytes in
    progress: list[tuple[int, int]] = []
    await pair.alice.send_file("bob", source, progress=lambda d, t: progress.append((d, t)))
    offsets = proxy.offsets()
    # The cut chunk went again from the relay's offset; the two before it never did.
    assert offsets[:4] == [0, CHUNK, 2 * CHUNK, 2 * CHUNK]
    assert offsets == sorted(offsets) and offsets.count(0) == offsets.count(CHUNK) == 1
    assert [d for d, _ in progress] == sorted({d for d, _ in progress})  # never backwards
    assert part_files(relay) == []
    await received_intact(pair.bob, pair.events, data, tmp_path / "got.bin")


async def test_an_upload_that_fails_for_good_is_deleted_on_the_relay(
    relay: Relay, proxy: Proxy, alice: VoxClient, photo: tuple[Path, bytes], no_pauses: None
) -> None:
    source, _ = photo

    # The file grows once a chunk is up: refused, and the upload deleted.
    def grow(done: int, total: int) -> None:
        with source.open("ab") as f:
            f.write(os.urandom(2_000_000))

    with pytest.raises(AttachmentError, match="grew"):
        await alice.upload_file(source, progress=grow)
    assert proxy.offsets()[0] == 0
    assert part_files(relay) == []

    # Every chunk's connection dies: the attempts run out, the upload is deleted.
    source.write_bytes(os.urandom(300_000))
    proxy.refuse = (b"PATCH ",)
    with pytest.raises(RelayUnavailable):
        await alice.upload_file(source)
    assert part_files(relay) == []
    assert sdk_attachments._open_uploads(alice) == []


async def test_an_upload_left_behind_is_deleted_by_the_next_one(
    relay: Relay,
    proxy: Proxy,
    alice: VoxClient,
    photo: tuple[Path, bytes],
    tmp_path: Path,
    no_pauses: None,
) -> None:
    source, _ = photo
    # Neither the chunks nor the DELETE get through (the relay unreachable midway, or the
    # process killed): the upload stays on the relay, holding a slot.
    proxy.refuse = (b"PATCH ", b"DELETE ")
    with pytest.raises(RelayUnavailable):
        await alice.upload_file(source)
    assert len(part_files(relay)) == 1
    assert len(sdk_attachments._open_uploads(alice)) == 1
    # The next upload of another file (here after a restart of the client) deletes it.
    await alice.close()
    reopened = await VoxClient.open(tmp_path / "alice")
    try:
        proxy.refuse = ()
        other = tmp_path / "other.bin"
        other.write_bytes(os.urandom(1_000))
        pointer = await reopened.upload_file(other)
        assert pointer.blob_id
        assert part_files(relay) == []
        assert sdk_attachments._open_uploads(reopened) == []
    finally:
        await reopened.close()


async def test_an_upload_left_behind_by_a_process_is_resumed_by_the_next_send_of_that_file(
    relay: Relay,
    proxy: Proxy,
    pair: Pair,
    photo: tuple[Path, bytes],
    tmp_path: Path,
    no_pauses: None,
) -> None:
    source, data = photo

    # Two chunks go up, then the relay becomes unreachable for chunks and the DELETE.
    def unreachable_after_two(done: int, total: int) -> None:
        if done == 2 * CHUNK:
            proxy.refuse = (b"PATCH ", b"DELETE ")

    with pytest.raises(RelayUnavailable):
        await pair.alice.send_file("bob", source, progress=unreachable_after_two)
    assert len(part_files(relay)) == 1
    # A new process sends the same file: it goes on from the relay's offset (the blob
    # made again under the same key is the same), and bob gets the file intact.
    await pair.alice.close()
    pair.alice = await VoxClient.open(tmp_path / "alice")
    await pair.alice.connect()
    proxy.refuse = ()
    before = len(proxy.offsets())
    progress: list[tuple[int, int]] = []
    await pair.alice.send_file("bob", source, progress=lambda d, t: progress.append((d, t)))
    total = ciphertext_size(padded_size(len(data)))
    resumed = proxy.offsets()[before:]
    assert resumed == [i * CHUNK for i in range(2, -(-total // CHUNK))]
    assert progress[0] == (2 * CHUNK, total) and progress[-1] == (total, total)
    assert part_files(relay) == []
    assert sdk_attachments._open_uploads(pair.alice) == []
    await received_intact(pair.bob, pair.events, data, tmp_path / "got.bin")


@pytest.fixture
async def old_relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay as it was before resumable uploads: no ``/v1/attachments/uploads`` routes
    (a POST there meets the download route: 405)."""
    settings = make_settings(tmp_path)
    app = create_app(settings)
    app.router.routes[:] = [
        r
        for r in app.router.routes
        if not (isinstance(r, Route) and r.path.startswith("/v1/attachments/uploads"))
    ]
    async with running_relay(settings, app=app) as r:
        yield r


async def test_an_older_relay_gets_the_one_shot_upload(
    old_relay: Relay, photo: tuple[Path, bytes], tmp_path: Path
) -> None:
    source, data = photo
    alice = await VoxClient.register(tmp_path / "alice", old_relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", old_relay.base_url, "bob")
    events: list[Event] = []
    bob.on_event(events.append)
    try:
        await alice.connect()
        await bob.connect()
        progress: list[tuple[int, int]] = []
        await alice.send_file("bob", source, progress=lambda d, t: progress.append((d, t)))
        total = ciphertext_size(padded_size(len(data)))
        assert progress[-1] == (total, total)
        await received_intact(bob, events, data, tmp_path / "got.bin")
    finally:
        await alice.close()
        await bob.close()


async def test_the_proxy_tells_a_request_head_from_body_bytes() -> None:
    """A read of a chunk's body that starts with a zero byte (or with ``PATCH ``) is body,
    not a request: the old proxy closed the connection on it (1 read in 256 of random
    ciphertext; a retry resent the same bytes, split the same way, so an upload failed)."""
    echoed_all = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            echoed_all.set()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = Proxy(upstream.sockets[0].getsockname()[1])
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    try:
        body = [b"\0" + os.urandom(999), b"PATCH " + os.urandom(994)]
        head = b"PATCH /x HTTP/1.1\r\nUpload-Offset: 7\r\nContent-Length: 2000\r\n\r\n"
        for part in (head, *body):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)  # each part is a read of its own at the proxy
        sent = head + b"".join(body)
        echoed = await asyncio.wait_for(reader.readexactly(len(sent)), 5)
        assert echoed == sent
        assert proxy.offsets() == [7]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await asyncio.wait_for(echoed_all.wait(), 10)  # the echo's side is closed too
        await proxy.stop()
        upstream.close()
        await upstream.wait_closed()
