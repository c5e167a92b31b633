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
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.attachments.storage import AttachmentStore, TooLarge, Truncated
from server.clock import Clock
from server.db.engine import write_transaction
from server.db.models_delivery import Attachment
from server.diskguard import DiskGuard
from server.errors import BadRequest, InsufficientStorage, NotFound, PayloadTooLarge

__all__ = ["ATTACHMENT_ID_PATTERN", "AttachmentInfo", "AttachmentService"]

log = logging.getLogger("vox.attachments")

_table = cast(Table, Attachment.__table__)
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
    """Bytes stored by the device (unexpired) and by everyone (everything still stored)."""
    device = await conn.scalar(
        select(func.coalesce(func.sum(_table.c.size), 0)).where(
            _table.c.uploader_device_pk == device_pk, _table.c.expires_at > now
        )
    )
    total = await conn.scalar(select(func.coalesce(func.sum(_table.c.size), 0)))
    return _Usage(int(device or 0), int(total or 0))


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A stored attachment's public metadata."""

    id: str
    size: int
    expires_at: int


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
        self._task: asyncio.Task[None] | None = None

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
        return len(ids)

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
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("attachment sweep failed: %s", exc.__class__.__name__)
            await asyncio.sleep(self.sweep_interval)
