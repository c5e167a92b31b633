"""Attachments over :class:`~clients.sdk.core.Core`: encrypt and upload a file (streamed,
padded to Signal's buckets), send its pointer, download and verify one.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from clients.sdk import trust
from clients.sdk.content import AttachmentContent
from clients.sdk.core import Core
from clients.sdk.errors import AttachmentError, RelayRejected, RelayUnavailable
from clients.sdk.models import Message, SendResult
from clients.sdk.peers import check_user
from clients.store.models import is_group_conversation
from crypto.attachments import (
    DEFAULT_CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentPointer,
    ciphertext_size,
    padded_size,
)
from crypto.errors import AttachmentMismatch, VoxError

__all__ = ["Progress", "download", "send_file", "upload_file"]

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)`` for uploads and downloads."""


async def send_file(
    core: Core,
    to: str,
    path: Path | str,
    *,
    caption: str = "",
    progress: Progress | None = None,
) -> SendResult:
    """Encrypt ``path`` (streamed), upload it, then send the pointer to ``to`` (a user or a
    group conversation)."""
    if not is_group_conversation(to):
        check_user(to)
        trust.require_trusted(core.store, to)
    pointer = await upload_file(core, path, progress=progress)
    group_id = b""
    if is_group_conversation(to):
        group_id = bytes.fromhex(to.removeprefix("group:"))
    content = AttachmentContent(
        pointer=pointer.to_bytes(),
        caption=caption,
        group_id=group_id,
        sent_at_ms=int(time.time() * 1000),
    )
    return await core.send_chat(to, content)


async def upload_file(
    core: Core, path: Path | str, *, progress: Progress | None = None
) -> AttachmentPointer:
    """Encrypt and upload a file; returns its pointer (with the relay's blob id).

    The file is padded with zeros to Signal's bucket (``crypto.attachments.padded_size``,
    at most 5 % more, 541 bytes at least), so the relay sees only the bucket. If the
    padded blob exceeds the relay's ``max_attachment_bytes`` (from ``/v1/config``), an
    :class:`AttachmentError` is raised before anything is uploaded. ``progress`` counts
    blob bytes (padding included) against the exact blob size.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
    padded = padded_size(size)
    total = ciphertext_size(padded, DEFAULT_CHUNK_SIZE)
    limit: float | None = None
    with contextlib.suppress(RelayRejected, RelayUnavailable):
        limit = (await core.config()).limits.get("max_attachment_bytes")
    if limit is not None and total > limit:
        raise AttachmentError(
            f"{path.name} is too large for this relay: {size:,} bytes are {total:,} bytes "
            f"encrypted and padded, over the relay's limit of {int(limit):,} bytes"
        )
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise AttachmentError(f"cannot read {path}: {exc.strerror or exc}") from None
    encryptor = AttachmentEncryptor()
    sent = 0
    piece = 1024 * 1024

    def counted(out: bytes) -> bytes:
        nonlocal sent
        sent += len(out)
        if progress and out:
            progress(sent, total)
        return out

    async def chunks() -> AsyncIterator[bytes]:
        with handle:
            while data := await asyncio.to_thread(handle.read, piece):
                out = encryptor.feed(data)
                if encryptor.size > padded:  # the blob would exceed its Content-Length
                    raise AttachmentError(f"{path} grew while it was being uploaded")
                if out:
                    yield counted(out)
        # Zero padding up to the bucket, streamed; a file that shrank meanwhile is padded
        # further, so the blob is always exactly ``total`` bytes.
        while (missing := padded - encryptor.size - encryptor.padding) > 0:
            out = encryptor.pad(min(missing, piece))
            if out:
                yield counted(out)
        yield counted(encryptor.finish())

    try:
        answer = await core.http.upload_attachment(chunks(), total)
    except RelayRejected as exc:
        if exc.code != "too_large":
            raise
        raise AttachmentError(
            f"{path.name} is too large for this relay ({total:,} bytes encrypted and "
            f"padded): {exc.message}"
        ) from None
    finally:
        handle.close()  # also when the upload failed before reading the file
    blob_id = answer.id
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return encryptor.pointer(content_type=content_type, file_name=path.name[:255], blob_id=blob_id)


async def download(
    core: Core,
    attachment: Message | AttachmentPointer | bytes,
    dest: Path | str,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, verify (digest, size) and decrypt an attachment to ``dest`` (a file, or a
    directory to put the original file name in). Nothing is left behind on failure.

    Padding (pointer version 2) is checked to be all zero and never written; ``progress``
    counts blob bytes against the exact (padded) blob size."""
    if isinstance(attachment, Message):
        if attachment.attachment is None:
            raise AttachmentError("this message has no attachment")
        raw = attachment.attachment.pointer
        pointer = AttachmentPointer.from_bytes(raw)
    elif isinstance(attachment, bytes):
        pointer = AttachmentPointer.from_bytes(attachment)
    else:
        pointer = attachment
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / (Path(pointer.file_name).name or "attachment")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    decryptor = AttachmentDecryptor.for_pointer(pointer)
    total = pointer.ciphertext_size
    done = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            failure: VoxError | None = None

            async def sink(chunk: bytes) -> None:
                # After a failure the rest is read but ignored, so the relay's response
                # finishes normally instead of being cut off.
                nonlocal done, failure
                done += len(chunk)
                if done > total:  # a relay that streams more than announced: cut it off
                    raise AttachmentError("the blob is larger than its pointer says")
                if failure is None:
                    try:
                        out.write(decryptor.feed(chunk))
                    except VoxError as exc:
                        failure = exc
                if progress:
                    progress(min(done, total), total)

            await core.http.download_attachment(pointer.blob_id, sink)
            try:
                if failure is not None:
                    raise failure
                out.write(decryptor.finish())
            except VoxError as exc:
                what = type(exc).__name__
                if isinstance(exc, AttachmentMismatch):  # digest, size or padding
                    what = f"{what}: {exc.field}"
                raise AttachmentError(f"verification failed ({what})") from None
        tmp.replace(dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if isinstance(attachment, Message):
        stored = core.store.get_message(attachment.id)
        if stored is not None and stored.attachment is not None:
            meta = dict(stored.attachment)
            meta["path"] = str(dest)
            core.store.update_attachment(attachment.id, meta)
    return dest
