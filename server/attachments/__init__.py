"""Opaque attachment blobs: streaming upload/download and expiry (``docs/protocol-ws.md``).

Wiring, in the app factory::

    app.include_router(attachments.router, dependencies=v1)
    relay_state(app).lifespan_hooks.append(attachments.lifespan)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.attachments.routes import router
from server.attachments.service import AttachmentService, UploadLimits
from server.attachments.storage import AttachmentStore, LocalDiskStore
from server.state import relay_state

__all__ = ["AttachmentService", "AttachmentStore", "LocalDiskStore", "lifespan", "router"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the store under ``<data dir>/attachments`` and run the expiry sweeper."""
    state = relay_state(app)
    settings = state.settings
    store = LocalDiskStore(settings.data_dir.resolve() / "attachments")
    service = AttachmentService(
        state.engine,
        store,
        max_bytes=settings.limits.max_attachment_bytes,
        ttl_seconds=settings.limits.attachment_ttl_seconds,
        clock=state.clock,
        quota_per_device=settings.limits.max_attachment_bytes_per_device,
        quota_total=settings.limits.max_attachment_bytes_total,
        disk=state.disk,
        uploads=UploadLimits(
            chunk_bytes=settings.limits.max_upload_chunk_bytes,
            ttl_seconds=settings.limits.upload_ttl_seconds,
            per_device=settings.limits.max_concurrent_uploads_per_device,
        ),
    )
    state.attachments = service
    service.start()
    try:
        yield
    finally:
        await service.stop()
