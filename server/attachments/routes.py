"""``POST /v1/attachments`` (streaming upload) and ``GET /v1/attachments/{id}`` (download)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from server.attachments.service import AttachmentService
from server.deps import CurrentDevice, StateDep
from server.errors import BadRequest
from server.openapi import error_responses
from wire.rest import AttachmentCreated

__all__ = ["router"]

router = APIRouter(prefix="/v1/attachments", tags=["attachments"])


async def _service(state: StateDep) -> AttachmentService:
    return state.attachments


AttachmentsDep = Annotated[AttachmentService, Depends(_service)]


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("invalid Content-Length", code="bad_request")
    return int(value)


class _ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator (and so the blob's open
    file), also when the client disconnects mid-stream or sending fails. Starlette leaves
    an abandoned iterator to the garbage collector."""

    def __init__(self, content: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._content, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


@router.post(
    "",
    status_code=201,
    response_model=AttachmentCreated,
    responses=error_responses(400, 413, 507),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def upload(request: Request, me: CurrentDevice, service: AttachmentsDep) -> AttachmentCreated:
    """Stream an opaque blob (``application/octet-stream``) into the store."""
    declared = _declared_length(request)
    try:
        info = await service.upload(me.device_pk, request.stream(), declared)
    except ClientDisconnect:
        raise BadRequest("client disconnected during upload", code="truncated") from None
    return AttachmentCreated(id=info.id, size=info.size, expires_at=info.expires_at)


@router.get(
    "/{attachment_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **error_responses(404),
    },
)
async def download(
    attachment_id: str, _: CurrentDevice, service: AttachmentsDep
) -> StreamingResponse:
    """Stream a blob back (any authenticated device holding the id may fetch it)."""
    info = await service.lookup(attachment_id)
    return _ClosingStreamingResponse(
        service.stream(info.id),
        media_type="application/octet-stream",
        headers={"Content-Length": str(info.size), "Cache-Control": "no-store"},
    )
