"""Attachment padding through the SDK and a real relay on loopback: the relay stores only
bucket-sized blobs, downloads strip (and check) the padding, older unpadded pointers still
open, and a file whose padded blob is over the relay's limit is refused before uploading."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clients.sdk import AttachmentError, Event, Message, VoxClient
from crypto.attachments import (
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    padded_size,
)
from tests.clients.conftest import Factory
from tests.clients.kit import wait_for
from tests.server.relay_harness import Relay, make_settings, running_relay


def stored_size(relay: Relay, blob_id: str) -> int:
    """The size of the blob file the relay keeps (``LocalDiskStore`` layout)."""
    root = relay.settings.data_dir.resolve() / "attachments"
    return (root / blob_id[:2] / blob_id).stat().st_size


def stored_blobs(relay: Relay) -> list[Path]:
    root = relay.settings.data_dir.resolve() / "attachments"
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"]


def recorder(into: list[tuple[int, int]]) -> Callable[[int, int], None]:
    """A progress callback appending each ``(done, total)`` to ``into``."""
    return lambda done, total: into.append((done, total))


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".part")]


async def test_same_bucket_files_give_identical_blobs_at_the_relay_and_download_intact(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    events: list[Event] = []
    bob.on_event(events.append)
    await alice.connect()
    await bob.connect()
    originals = {"a.bin": os.urandom(1_000), "b.bin": os.urandom(1_010)}
    uploads: dict[str, list[tuple[int, int]]] = {}
    for name, data in originals.items():
        (tmp_path / name).write_bytes(data)
        progress = uploads.setdefault(name, [])
        await alice.send_file("bob", tmp_path / name, progress=recorder(progress))
    expected_blob = ciphertext_size(padded_size(1_000))
    assert expected_blob == ciphertext_size(padded_size(1_010)) == 1_041
    for progress in uploads.values():
        # Progress counts the real (padded) blob: one total throughout, ending exactly on it.
        assert {total for _, total in progress} == {expected_blob}
        assert progress[-1] == (expected_blob, expected_blob)
        assert [done for done, _ in progress] == sorted(done for done, _ in progress)

    def files() -> list[Message]:
        return [e for e in events if isinstance(e, Message) and e.attachment is not None]

    await wait_for(lambda: len(files()) == 2)
    sizes = set()
    for message in files():
        assert message.attachment is not None
        name = message.attachment.file_name
        pointer = AttachmentPointer.from_bytes(message.attachment.pointer)
        assert message.attachment.size == pointer.size == len(originals[name])
        assert pointer.padded_size == 1_020 and pointer.padding == 1_020 - pointer.size
        assert pointer.to_bytes()[0] == 2  # the padded pointer encoding
        sizes.add(stored_size(relay, pointer.blob_id))
        assert stored_size(relay, pointer.blob_id) == pointer.ciphertext_size == expected_blob
        got: list[tuple[int, int]] = []
        out = await bob.download(message, tmp_path / f"got-{name}", progress=recorder(got))
        assert out.read_bytes() == originals[name]  # byte-identical: padding stripped
        assert got and got[-1] == (expected_blob, expected_blob)
    assert sizes == {expected_blob}  # the relay cannot tell 1,000 from 1,010 bytes
    assert not leftovers(tmp_path)


async def test_a_ten_byte_and_a_five_hundred_byte_file_look_alike_at_the_relay(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice = await make_client("alice")
    sizes = []
    for n in (0, 10, 500, 541):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(n))
        pointer = await alice.upload_file(path)
        assert (pointer.size, pointer.padded_size) == (n, 541)
        sizes.append(stored_size(relay, pointer.blob_id))
    assert sizes == [ciphertext_size(541)] * 4


async def test_non_zero_padding_from_a_malicious_sender_is_refused_and_nothing_kept(
    make_client: Factory, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    data = b"looks like a file"
    padding = bytearray(padded_size(len(data)) - len(data))
    padding[-1] = 0x42  # a covert byte in the padding
    enc = AttachmentEncryptor()

    async def blob() -> AsyncIterator[bytes]:
        yield enc.feed(data + bytes(padding)) + enc.finish()

    total = ciphertext_size(len(data) + len(padding))
    answer = await alice.http.upload_attachment(blob(), total)
    pointer = AttachmentPointer(
        enc.key,
        enc.digest,
        len(data),
        enc.chunk_size,
        "text/plain",
        "forged.txt",
        answer.id,
        padding=len(padding),
    )
    with pytest.raises(AttachmentError, match="padding"):
        await bob.download(pointer.to_bytes(), tmp_path / "forged.txt")
    assert not (tmp_path / "forged.txt").exists()
    assert not leftovers(tmp_path)


async def test_an_unpadded_version_1_pointer_still_downloads(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    data = os.urandom(777)
    enc = AttachmentEncryptor()

    async def blob() -> AsyncIterator[bytes]:
        yield enc.feed(data) + enc.finish()  # what clients uploaded before padding

    answer = await alice.http.upload_attachment(blob(), ciphertext_size(len(data)))
    pointer = enc.pointer(content_type="application/octet-stream", file_name="old.bin")
    raw = pointer.with_blob_id(answer.id).to_bytes()
    assert raw[0] == 1
    assert stored_size(relay, answer.id) == ciphertext_size(777)
    out = await bob.download(raw, tmp_path)
    assert out == tmp_path / "old.bin" and out.read_bytes() == data


@pytest.fixture
async def small_relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay whose attachment limit is 1,024 bytes (its minimum)."""
    settings = make_settings(tmp_path, limits={"max_attachment_bytes": 1_024})
    async with running_relay(settings) as r:
        yield r


async def test_a_file_over_the_limit_once_padded_is_refused_before_uploading(
    small_relay: Relay, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "alice", small_relay.base_url, "alice")
    try:
        # 1,000 bytes would fit unpadded (1,021-byte blob) but not padded (1,041 bytes).
        assert ciphertext_size(1_000) <= 1_024 < ciphertext_size(padded_size(1_000))
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(1_000))
        progress: list[tuple[int, int]] = []
        with pytest.raises(AttachmentError, match=r"too large for this relay.*1,041.*1,024"):
            await alice.upload_file(big, progress=lambda d, t: progress.append((d, t)))
        assert progress == []  # nothing was sent
        assert stored_blobs(small_relay) == []
        # A file whose bucket fits is uploaded normally.
        small = tmp_path / "small.bin"
        small.write_bytes(os.urandom(400))
        pointer = await alice.upload_file(small)
        assert stored_size(small_relay, pointer.blob_id) == ciphertext_size(541) <= 1_024
    finally:
        await alice.close()


async def test_without_the_config_the_relays_own_refusal_is_an_attachment_error(
    small_relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await VoxClient.register(tmp_path / "alice", small_relay.base_url, "alice")
    try:
        from clients.sdk.errors import RelayUnavailable

        async def no_config() -> None:
            raise RelayUnavailable(small_relay.base_url, "config unavailable (test)")

        monkeypatch.setattr(alice, "config", no_config)
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(1_000))
        with pytest.raises(AttachmentError, match="too large for this relay"):
            await alice.upload_file(big)
        assert stored_blobs(small_relay) == []
    finally:
        await alice.close()
