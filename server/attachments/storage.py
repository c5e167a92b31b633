"""Where attachment bytes live: a small storage interface and its local-disk implementation.

The relay never interprets attachment bytes (clients encrypt them before upload). An object
store (S3 and the like) can implement :class:`AttachmentStore` later without touching routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["AttachmentStore", "LocalDiskStore", "TooLarge", "Truncated"]

CHUNK = 256 * 1024


class TooLarge(Exception):
    """The upload exceeded the size limit (nothing was kept)."""


class Truncated(Exception):
    """The upload ended before its declared length (nothing was kept)."""


class AttachmentStore(Protocol):
    """Opaque blob storage keyed by attachment id."""

    async def put(
        self,
        blob_id: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        expected: int | None = None,
    ) -> int:
        """Store the stream under ``blob_id`` atomically; return its size.

        Raises :class:`TooLarge` past ``max_bytes`` and :class:`Truncated` when ``expected``
        is given and not met; in both cases (and on any error) nothing is kept.
        """
        ...

    def get(self, blob_id: str) -> AsyncIterator[bytes]:
        """Stream the blob's bytes (raises ``FileNotFoundError`` if it is absent).

        Whatever the stream holds open is released when it ends, fails, or is closed early
        with ``aclose()`` (the download route always closes it, also on a client abort).
        """
        ...

    async def size(self, blob_id: str) -> int | None:
        """The blob's size, or ``None`` if absent."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove the blob if present."""
        ...

    # -- resumable uploads (docs/protocol-ws.md §9.1): a part file per upload -------------

    async def create_part(self, upload_id: str) -> None:
        """Start an empty part for ``upload_id``."""
        ...

    async def append_part(
        self, upload_id: str, offset: int, chunks: AsyncIterable[bytes], length: int
    ) -> None:
        """Write exactly ``length`` bytes at ``offset`` (the part's end so far). Raises
        :class:`TooLarge` past ``length``, :class:`Truncated` short of it; then (and on any
        error) the part is cut back to ``offset``."""
        ...

    async def commit_part(self, upload_id: str, blob_id: str, size: int) -> None:
        """Make the complete part (its first ``size`` bytes) the blob ``blob_id``;
        :class:`Truncated` if it has fewer."""
        ...

    async def delete_part(self, upload_id: str) -> None:
        """Remove the part if present."""
        ...


class LocalDiskStore:
    """Blobs as files under ``root`` (``root/ab/abcdef…``), written via a temp file + rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"

    def _path(self, blob_id: str) -> Path:
        if not blob_id or "/" in blob_id or "\\" in blob_id or blob_id.startswith("."):
            raise ValueError("invalid blob id")
        return self.root / blob_id[:2] / blob_id

    async def put(
        self,
        blob_id: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        expected: int | None = None,
    ) -> int:
        final = self._path(blob_id)
        await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
        tmp = self._tmp / f"{secrets.token_hex(16)}.part"
        fh: BinaryIO = await asyncio.to_thread(open, tmp, "xb")
        try:
            limit = max_bytes if expected is None else min(max_bytes, expected)
            size = await _write_stream(fh, chunks, limit)
            if expected is not None and size != expected:
                raise Truncated
            await asyncio.to_thread(_flush_and_close, fh)
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.replace, tmp, final)
            return size
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, fh, tmp))
            raise

    async def get(self, blob_id: str) -> AsyncIterator[bytes]:
        fh = await _open_for_reading(self._path(blob_id))
        try:
            while True:
                chunk = await asyncio.to_thread(fh.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            # Synchronously: closing a file opened for reading does not block (at most it
            # waits for a read still running in its thread), and an ``await`` here would
            # itself be cancelled when the client disconnected mid-stream (anyio re-cancels
            # until the task leaves its cancel scope), leaking the file.
            fh.close()

    async def size(self, blob_id: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(blob_id).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, blob_id: str) -> None:
        await asyncio.to_thread(self._path(blob_id).unlink, missing_ok=True)

    def _part(self, upload_id: str) -> Path:
        if not upload_id or "/" in upload_id or "\\" in upload_id or upload_id.startswith("."):
            raise ValueError("invalid upload id")
        return self.root / "uploads" / f"{upload_id}.part"

    async def create_part(self, upload_id: str) -> None:
        part = self._part(upload_id)
        await asyncio.to_thread(part.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(part.touch, exist_ok=False)

    async def append_part(
        self, upload_id: str, offset: int, chunks: AsyncIterable[bytes], length: int
    ) -> None:
        fh: BinaryIO = await asyncio.to_thread(open, self._part(upload_id), "r+b")
        try:
            # Bytes past the offset (a chunk written before a crash, never recorded) go.
            await asyncio.to_thread(fh.truncate, offset)
            await asyncio.to_thread(fh.seek, offset)
            if await _write_stream(fh, chunks, length) != length:
                raise Truncated
            await asyncio.to_thread(_flush_and_close, fh)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_cut_back, fh, offset))
            raise

    async def commit_part(self, upload_id: str, blob_id: str, size: int) -> None:
        part = self._part(upload_id)
        if (await asyncio.to_thread(part.stat)).st_size < size:
            raise Truncated  # bytes lost (e.g. a restore of an older copy of the part)
        # Past a crash after a recorded chunk, the part may still hold unrecorded bytes.
        await asyncio.to_thread(os.truncate, part, size)
        final = self._path(blob_id)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(os.replace, part, final)

    async def delete_part(self, upload_id: str) -> None:
        await asyncio.to_thread(self._part(upload_id).unlink, missing_ok=True)

    async def clean_parts(self, *, before: float) -> None:
        """Remove part files last written before ``before`` (Unix time): an upload whose row
        went (its device was deleted) or a crash between the row's and the file's removal."""

        def _clean() -> None:
            for part in (self.root / "uploads").glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < before:
                        part.unlink(missing_ok=True)

        await asyncio.to_thread(_clean)

    async def clean_temp(self, *, before: float) -> None:
        """Remove partial uploads left behind by a crash (last written before ``before``,
        Unix time)."""

        def _clean() -> None:
            if not self._tmp.is_dir():
                return
            for part in self._tmp.glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < before:
                        part.unlink(missing_ok=True)

        await asyncio.to_thread(_clean)


async def _write_stream(fh: BinaryIO, chunks: AsyncIterable[bytes], limit: int) -> int:
    """Write the stream to ``fh`` in ``CHUNK``-sized batches; its size. :class:`TooLarge`
    as soon as it passes ``limit``."""
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= CHUNK:
            await asyncio.to_thread(fh.write, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await asyncio.to_thread(fh.write, b"".join(pending))
    return size


async def _open_for_reading(path: Path) -> BinaryIO:
    """``open(path, "rb")`` in a thread; the file is closed if the caller is cancelled
    while the thread opens it (instead of being left to the garbage collector)."""
    future: asyncio.Future[BinaryIO] = asyncio.get_running_loop().run_in_executor(
        None, _open_rb, path
    )
    try:
        fh = await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_close_result)
        raise
    return fh


def _open_rb(path: Path) -> BinaryIO:
    return open(path, "rb")


def _close_result(future: asyncio.Future[BinaryIO]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _flush_and_close(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


def _discard(fh: BinaryIO, tmp: Path) -> None:
    fh.close()
    tmp.unlink(missing_ok=True)


def _cut_back(fh: BinaryIO, offset: int) -> None:
    """After a failed append: the part ends at ``offset`` again (what arrived is dropped)."""
    if fh.closed:
        with open(fh.name, "r+b") as again:
            again.truncate(offset)
        return
    fh.flush()
    fh.truncate(offset)
    fh.close()
