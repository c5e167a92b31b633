"""Attachment uploads, downloads and expiry (metadata in ``attachments``, bytes in a store).

Quotas (``docs/threat-model.md``): one device may have at most ``quota_per_device`` bytes of
unexpired attachments stored, the relay at most ``quota_total`` bytes in all (expired but
not yet swept ones included: they are still on disk), and nothing is accepted while free
disk space is below the watermark (:class:`server.diskguard.DiskGuard`). An upload is
checked before its bytes are read (with ``Content-Length``), its stream is cut off at what
the quotas leave, and the usage is checked again when its row is inserted, under a lock
(SQLite's write lock; a PostgreSQL advisory transaction lock), so that concurrent uploads
can never overshoot a quota together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.attachments.storage import AttachmentStore, TooLarge, Truncated
from server.clock import Clock
from server.db.engine import write_transaction
from server.db.models_delivery import Attachment, AttachmentUpload, AttachmentUsage
from server.diskguard import DiskGuard
from server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)

__all__ = [
    "ATTACHMENT_ID_PATTERN",
    "AttachmentInfo",
    "AttachmentService",
    "OffsetMismatch",
    "UploadInfo",
    "UploadLimits",
]

log = logging.getLogger("vox.attachments")

_table = cast(Table, Attachment.__table__)
_uploads = cast(Table, AttachmentUpload.__table__)
#: One row: the bytes of all of ``attachments`` (kept by triggers, migration 0010).
_usage_total = cast(Table, AttachmentUsage.__table__)
#: 32 bytes from ``secrets`` as unpadded base64url: 43 characters, 256 bits.
ATTACHMENT_ID_PATTERN = r"^[A-Za-z0-9_-]{43}$"
_ID_RE = re.compile(ATTACHMENT_ID_PATTERN)
#: ``pg_advisory_xact_lock(int4, int4)`` class of the attachment-quota lock: "VoxA".
_QUOTA_LOCK_CLASS = 0x566F7841
_LOCK_QUOTA_PG = text("SELECT pg_advisory_xact_lock(:cls, 0)")


@dataclass(frozen=True, slots=True)
class _Usage:
    device: int
    total: int


async def _usage(conn: AsyncConnection, device_pk: int, now: int) -> _Usage:
    """Bytes stored by the device (unexpired) and by everyone (everything still stored: the
    running total ``attachment_usage``, one row); an unfinished upload counts with its whole
    declared size (reserved when it starts)."""
    device = await conn.scalar(
        select(func.coalesce(func.sum(_table.c.size), 0)).where(
            _table.c.uploader_device_pk == device_pk, _table.c.expires_at > now
        )
    )
    total = await conn.scalar(select(_usage_total.c.total_bytes).where(_usage_total.c.id == 1))
    pending = _uploads.c.attachment_id.is_(None)
    device_reserved = await conn.scalar(
        select(func.coalesce(func.sum(_uploads.c.size), 0)).where(
            _uploads.c.device_pk == device_pk, _uploads.c.expires_at > now, pending
        )
    )
    total_reserved = await conn.scalar(
        select(func.coalesce(func.sum(_uploads.c.size), 0)).where(pending)
    )
    return _Usage(
        int(device or 0) + int(device_reserved or 0), int(total or 0) + int(total_reserved or 0)
    )


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A stored attachment's public metadata."""

    id: str
    size: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """Resumable uploads (``limits.max_upload_chunk_bytes``, ``upload_ttl_seconds``,
    ``max_concurrent_uploads_per_device``)."""

    chunk_bytes: int = 8 * 1024 * 1024
    ttl_seconds: int = 86400
    per_device: int = 4


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """A resumable upload's state; ``attachment`` once it was finished."""

    id: str
    size: int
    offset: int
    expires_at: int
    attachment: AttachmentInfo | None = None


class OffsetMismatch(Conflict):
    """A chunk that does not start at the upload's offset (409, ``Upload-Offset`` header)."""

    code = "offset_mismatch"

    def __init__(self, message: str, *, offset: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.offset = offset

    def headers(self) -> dict[str, str]:
        return {"Upload-Offset": str(self.offset)}


class AttachmentService:
    """Streams blobs into and out of the store; the sweeper deletes expired ones."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: AttachmentStore,
        *,
        max_bytes: int,
        ttl_seconds: int,
        clock: Clock,
        quota_per_device: int | None = None,
        quota_total: int | None = None,
        disk: DiskGuard | None = None,
        sweep_interval: float = 300.0,
        uploads: UploadLimits | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self.clock = clock
        self.quota_per_device = quota_per_device
        self.quota_total = quota_total
        self.disk = disk
        self.sweep_interval = sweep_interval
        self.uploads = uploads or UploadLimits()
        self._task: asyncio.Task[None] | None = None
        #: One chunk at a time per upload on this node (a repeat waits, then sees it is in).
        self._upload_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def upload(
        self, device_pk: int, chunks: AsyncIterable[bytes], declared: int | None
    ) -> AttachmentInfo:
        """Store an upload; nothing is kept unless all of it arrived within the limits."""
        if declared is not None and declared > self.max_bytes:
            raise PayloadTooLarge(
                f"attachment exceeds the limit of {self.max_bytes} bytes", code="too_large"
            )
        if self.disk is not None:
            self.disk.check()
        async with self.engine.connect() as conn:
            before = await _usage(conn, device_pk, self.clock.now())
        room = self._room(before, declared or 0)
        blob_id = secrets.token_urlsafe(32)
        try:
            size = await self.store.put(
                blob_id, chunks, max_bytes=min(self.max_bytes, room), expected=declared
            )
        except TooLarge:
            if room < self.max_bytes:
                self._room(before, room + 1)  # a quota cut the stream off: its 507
            raise PayloadTooLarge(
                f"attachment exceeds the limit of {self.max_bytes} bytes", code="too_large"
            ) from None
        except Truncated:
            raise BadRequest(
                "upload ended before Content-Length bytes arrived", code="truncated"
            ) from None
        now = self.clock.now()
        info = AttachmentInfo(blob_id, size, now + self.ttl)
        try:
            if self.disk is not None:
                self.disk.check()  # the disk may have filled while the body streamed in
            async with write_transaction(self.engine) as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(_LOCK_QUOTA_PG, {"cls": _QUOTA_LOCK_CLASS})
                self._room(await _usage(conn, device_pk, now), size)
                await conn.execute(
                    insert(_table).values(
                        id=blob_id,
                        uploader_device_pk=device_pk,
                        size=size,
                        created_at=now,
                        expires_at=info.expires_at,
                    )
                )
        except BaseException:
            await asyncio.shield(self.store.delete(blob_id))
            raise
        return info

    def _room(self, usage: _Usage, size: int) -> int:
        """Bytes the quotas leave for one more upload; 507 if ``size`` bytes do not fit."""
        room = self.max_bytes
        if self.quota_per_device is not None:
            left = self.quota_per_device - usage.device
            if size > left or left <= 0:
                raise InsufficientStorage(
                    f"this device's attachments would exceed its quota of "
                    f"{self.quota_per_device} bytes (until some expire)",
                    code="quota_exceeded",
                )
            room = min(room, left)
        if self.quota_total is not None:
            left = self.quota_total - usage.total
            if size > left or left <= 0:
                raise InsufficientStorage("the relay's attachment storage is full; retry later")
            room = min(room, left)
        return room

    # -- resumable uploads (docs/protocol-ws.md §9.1) -----------------------------------

    async def create_upload(self, device_pk: int, size: int) -> UploadInfo:
        """Start an upload of ``size`` bytes: within the size limit and the quotas (the whole
        size is reserved now), at most ``per_device`` unfinished ones per device."""
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"attachment exceeds the limit of {self.max_bytes} bytes", code="too_large"
            )
        if self.disk is not None:
            self.disk.check()
        upload_id = secrets.token_urlsafe(32)
        now = self.clock.now()
        expires_at = now + self.uploads.ttl_seconds
        await self.store.create_part(upload_id)
        try:
            async with write_transaction(self.engine) as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(_LOCK_QUOTA_PG, {"cls": _QUOTA_LOCK_CLASS})
                open_uploads = await conn.scalar(
                    select(func.count()).where(
                        _uploads.c.device_pk == device_pk,
                        _uploads.c.expires_at > now,
                        _uploads.c.attachment_id.is_(None),
                    )
                )
                if int(open_uploads or 0) >= self.uploads.per_device:
                    raise RateLimited(
                        f"this device already has {self.uploads.per_device} unfinished "
                        "uploads; finish or delete one",
                        retry_after=60,
                        code="too_many_uploads",
                    )
                self._room(await _usage(conn, device_pk, now), size)
                await conn.execute(
                    insert(_uploads).values(
                        id=upload_id,
                        device_pk=device_pk,
                        size=size,
                        received=0,
                        created_at=now,
                        expires_at=expires_at,
                    )
                )
        except BaseException:
            await asyncio.shield(self.store.delete_part(upload_id))
            raise
        return UploadInfo(upload_id, size, 0, expires_at)

    async def upload_state(self, device_pk: int, upload_id: str) -> UploadInfo:
        """The calling device's upload, or 404 ``unknown_upload`` (also once expired)."""
        if not _ID_RE.match(upload_id):
            raise NotFound("no such upload", code="unknown_upload")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_uploads).where(
                        _uploads.c.id == upload_id, _uploads.c.device_pk == device_pk
                    )
                )
            ).first()
            attachment = None
            if row is not None and row.attachment_id is not None:
                got = (
                    await conn.execute(
                        select(_table.c.size, _table.c.expires_at).where(
                            _table.c.id == row.attachment_id
                        )
                    )
                ).first()
                if got is not None:
                    attachment = AttachmentInfo(row.attachment_id, got.size, got.expires_at)
        if row is None or row.expires_at <= self.clock.now():
            raise NotFound("no such upload", code="unknown_upload")
        return UploadInfo(row.id, row.size, row.received, row.expires_at, attachment)

    async def append(
        self,
        device_pk: int,
        upload_id: str,
        offset: int,
        length: int,
        chunks: AsyncIterable[bytes],
    ) -> UploadInfo:
        """Write a chunk of ``length`` bytes at ``offset``. At the upload's offset it is
        appended; a chunk wholly below it is a repeat and changes nothing; anything else is
        409 ``offset_mismatch`` with the offset to resume from."""
        if length > self.uploads.chunk_bytes:
            raise PayloadTooLarge(
                f"a chunk may carry at most {self.uploads.chunk_bytes} bytes",
                code="too_large",
            )
        lock = self._upload_locks.setdefault(upload_id, asyncio.Lock())
        async with lock:
            up = await self.upload_state(device_pk, upload_id)
            if up.attachment is not None:
                raise Conflict("this upload is finished", code="upload_finished")
            if offset + length > up.size:
                raise BadRequest(
                    f"the chunk ends at {offset + length}, past the upload's size {up.size}",
                    code="beyond_size",
                )
            if offset < up.offset and offset + length <= up.offset:
                return up  # a repeat of a chunk the relay has: nothing to do
            if offset != up.offset or length == 0:
                raise OffsetMismatch(f"the upload is at offset {up.offset}", offset=up.offset)
            if self.disk is not None:
                self.disk.check()
            try:
                await self.store.append_part(upload_id, offset, chunks, length)
            except FileNotFoundError:
                await self.cancel_upload(device_pk, upload_id)
                raise NotFound(
                    "the relay lost this upload's bytes; start a new upload",
                    code="unknown_upload",
                ) from None
            except TooLarge:
                raise BadRequest(
                    "the chunk is longer than its Content-Length", code="bad_request"
                ) from None
            except Truncated:
                raise BadRequest(
                    "the chunk ended before Content-Length bytes arrived", code="truncated"
                ) from None
            async with write_transaction(self.engine) as conn:
                done = await conn.execute(
                    update(_uploads)
                    .where(_uploads.c.id == upload_id, _uploads.c.received == offset)
                    .values(received=offset + length)
                )
            if done.rowcount != 1:  # another node moved it meanwhile
                now = await self.upload_state(device_pk, upload_id)
                raise OffsetMismatch(f"the upload is at offset {now.offset}", offset=now.offset)
            return UploadInfo(up.id, up.size, offset + length, up.expires_at)

    async def finish(self, device_pk: int, upload_id: str) -> tuple[AttachmentInfo, bool]:
        """Make a complete upload an attachment; ``(info, created)``. Finishing again
        returns the same attachment (``created`` false)."""
        lock = self._upload_locks.setdefault(upload_id, asyncio.Lock())
        async with lock:
            up = await self.upload_state(device_pk, upload_id)
            if up.attachment is not None:
                return up.attachment, False
            if up.offset != up.size:
                raise OffsetMismatch(
                    f"only {up.offset} of {up.size} bytes have arrived",
                    offset=up.offset,
                    code="upload_incomplete",
                )
            blob_id = secrets.token_urlsafe(32)
            now = self.clock.now()
            info = AttachmentInfo(blob_id, up.size, now + self.ttl)
            try:
                await self.store.commit_part(upload_id, blob_id, up.size)
            except (Truncated, FileNotFoundError):
                await self.cancel_upload(device_pk, upload_id)
                raise NotFound(
                    "the relay lost this upload's bytes; start a new upload",
                    code="unknown_upload",
                ) from None
            try:
                async with write_transaction(self.engine) as conn:
                    await conn.execute(
                        insert(_table).values(
                            id=blob_id,
                            uploader_device_pk=device_pk,
                            size=up.size,
                            created_at=now,
                            expires_at=info.expires_at,
                        )
                    )
                    await conn.execute(
                        update(_uploads)
                        .where(_uploads.c.id == upload_id)
                        .values(attachment_id=blob_id)
                    )
            except BaseException:
                await asyncio.shield(self.store.delete(blob_id))
                raise
            return info, True

    async def cancel_upload(self, device_pk: int, upload_id: str) -> None:
        """Drop an unfinished upload and its bytes (a finished one: only its record)."""
        up = await self.upload_state(device_pk, upload_id)
        async with write_transaction(self.engine) as conn:
            await conn.execute(delete(_uploads).where(_uploads.c.id == up.id))
        if up.attachment is None:
            await self.store.delete_part(up.id)

    async def lookup(self, blob_id: str) -> AttachmentInfo:
        """Metadata of a live attachment, or ``NotFound``."""
        if not _ID_RE.match(blob_id):
            raise NotFound("no such attachment", code="unknown_attachment")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_table.c.size, _table.c.expires_at).where(_table.c.id == blob_id)
                )
            ).first()
        if row is None or row.expires_at <= self.clock.now():
            raise NotFound("no such attachment", code="unknown_attachment")
        return AttachmentInfo(blob_id, row.size, row.expires_at)

    async def delete(self, device_pk: int, blob_id: str) -> bool:
        """Delete a finished attachment for the device that uploaded it: its row (which frees
        its quota at once), the record of the upload that made it, then its bytes. Whether
        something was deleted: an id that is not stored (deleted before, expired and swept,
        never made) is nothing to do — deleting is idempotent. Another device's attachment
        is 403 ``not_uploader``; a malformed id 404 ``unknown_attachment``."""
        if not _ID_RE.match(blob_id):
            raise NotFound("no such attachment", code="unknown_attachment")
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(_table.c.uploader_device_pk).where(_table.c.id == blob_id)
                )
            ).first()
            if row is None:
                return False
            if row.uploader_device_pk != device_pk:
                raise Forbidden(
                    "only the device that uploaded an attachment may delete it",
                    code="not_uploader",
                )
            await conn.execute(delete(_table).where(_table.c.id == blob_id))
            await conn.execute(
                delete(_uploads).where(
                    _uploads.c.device_pk == device_pk, _uploads.c.attachment_id == blob_id
                )
            )
        await self.store.delete(blob_id)
        return True

    def stream(self, blob_id: str) -> AsyncIterator[bytes]:
        """The attachment's bytes."""
        return self.store.get(blob_id)

    async def sweep(self, now: int | None = None) -> int:
        """Delete expired attachments (rows first, then bytes)."""
        t = self.clock.now() if now is None else now
        # Reads, then deletes: on SQLite the write lock must be taken at BEGIN.
        async with write_transaction(self.engine) as conn:
            ids = [
                r[0]
                for r in await conn.execute(
                    select(_table.c.id).where(_table.c.expires_at <= t).limit(1000)
                )
            ]
            if ids:
                await conn.execute(delete(_table).where(_table.c.id.in_(ids)))
        for blob_id in ids:
            await self.store.delete(blob_id)
        return len(ids) + await self._sweep_uploads(t)

    async def _sweep_uploads(self, now: int) -> int:
        """Delete expired uploads: unfinished ones with their part files (abandoned), and
        the records of finished ones."""
        async with write_transaction(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(_uploads.c.id, _uploads.c.attachment_id)
                    .where(_uploads.c.expires_at <= now)
                    .limit(1000)
                )
            ).all()
            if rows:
                await conn.execute(delete(_uploads).where(_uploads.c.id.in_([r.id for r in rows])))
        for row in rows:
            if row.attachment_id is None:
                await self.store.delete_part(row.id)
        return len(rows)

    def start(self) -> None:
        """Start the expiry sweeper."""
        self._task = asyncio.create_task(self._sweeper(), name="vox-attachment-sweeper")

    async def stop(self) -> None:
        """Stop the sweeper."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sweeper(self) -> None:
        clean = getattr(self.store, "clean_temp", None)
        if clean is not None:
            with contextlib.suppress(Exception):
                await clean(before=self.clock.time() - 3600.0)
        parts = getattr(self.store, "clean_parts", None)
        if parts is not None:
            # Parts untouched for longer than an upload lives belong to no live upload.
            with contextlib.suppress(Exception):
                await parts(before=self.clock.time() - self.uploads.ttl_seconds - 3600.0)
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("attachment sweep failed: %s", exc.__class__.__name__)
            await asyncio.sleep(self.sweep_interval)
