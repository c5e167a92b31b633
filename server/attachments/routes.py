"""``POST /v1/attachments`` (streaming upload) and ``GET /v1/attachments/{id}`` (download)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from server.attachments.service import AttachmentService
from server.deps import CurrentDevice
from server.errors import BadRequest

__all__ = ["AttachmentCreated", "router"]

router = APIRouter(prefix="/v1/attachments", tags=["attachments"])


class AttachmentCreated(BaseModel):
    """The upload's id (256-bit random, unguessable), size and expiry (Unix seconds)."""

    id: str
    size: int
    expires_at: int


def _service(request: Request) -> AttachmentService:
    service: AttachmentService = request.app.state.attachments
    return service


AttachmentsDep = Annotated[AttachmentService, Depends(_service)]


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("invalid Content-Length", code="bad_request")
    return int(value)


@router.post("", status_code=201, response_model=AttachmentCreated)
async def upload(request: Request, me: CurrentDevice, service: AttachmentsDep) -> AttachmentCreated:
    """Stream an opaque blob (``application/octet-stream``) into the store."""
    declared = _declared_length(request)
    try:
        info = await service.upload(me.device_pk, request.stream(), declared)
    except ClientDisconnect:
        raise BadRequest("client disconnected during upload", code="truncated") from None
    return AttachmentCreated(id=info.id, size=info.size, expires_at=info.expires_at)


@router.get("/{attachment_id}", response_class=StreamingResponse)
async def download(
    attachment_id: str, _: CurrentDevice, service: AttachmentsDep
) -> StreamingResponse:
    """Stream a blob back (any authenticated device holding the id may fetch it)."""
    info = await service.lookup(attachment_id)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in service.stream(info.id):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(info.size), "Cache-Control": "no-store"},
    )
