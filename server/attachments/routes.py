"""``POST /v1/attachments`` (streaming upload), the resumable uploads under
``/v1/attachments/uploads``, ``GET /v1/attachments/{id}`` (download) and
``DELETE /v1/attachments/{id}`` (the uploader withdraws it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from server.attachments.service import AttachmentService, UploadInfo
from server.deps import CurrentDevice, StateDep
from server.errors import BadRequest
from server.openapi import error_responses
from wire.rest import AttachmentCreated, UploadIn, UploadOut

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


def _upload_out(service: AttachmentService, up: UploadInfo, response: Response) -> UploadOut:
    response.headers["Upload-Offset"] = str(up.offset)
    response.headers["Cache-Control"] = "no-store"
    att = up.attachment
    return UploadOut(
        upload_id=up.id,
        size=up.size,
        offset=up.offset,
        chunk_bytes=service.uploads.chunk_bytes,
        expires_at=up.expires_at,
        attachment=AttachmentCreated(id=att.id, size=att.size, expires_at=att.expires_at)
        if att
        else None,
    )


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadOut,
    responses=error_responses(400, 413, 429, 507),
)
async def create_upload(
    body: UploadIn, response: Response, me: CurrentDevice, service: AttachmentsDep
) -> UploadOut:
    """Start a resumable upload of ``size`` bytes (reserved against the quotas now)."""
    return _upload_out(service, await service.create_upload(me.device_pk, body.size), response)


@router.get("/uploads/{upload_id}", response_model=UploadOut, responses=error_responses(404))
async def upload_state(
    upload_id: str, response: Response, me: CurrentDevice, service: AttachmentsDep
) -> UploadOut:
    """Where an upload stands: resume at ``offset``."""
    return _upload_out(service, await service.upload_state(me.device_pk, upload_id), response)


@router.patch(
    "/uploads/{upload_id}",
    response_model=UploadOut,
    responses=error_responses(400, 404, 409, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        "parameters": [
            {
                "name": "Upload-Offset",
                "in": "header",
                "required": True,
                "schema": {"type": "integer"},
            }
        ],
    },
)
async def append_chunk(
    upload_id: str,
    request: Request,
    response: Response,
    me: CurrentDevice,
    service: AttachmentsDep,
) -> UploadOut:
    """Append the body (``Content-Length`` bytes) at ``Upload-Offset``."""
    offset = request.headers.get("upload-offset", "")
    if not offset.isdigit() or len(offset) > 18:
        raise BadRequest("Upload-Offset must be a non-negative integer", code="bad_request")
    length = _declared_length(request)
    if length is None:
        raise BadRequest("a chunk needs a Content-Length", code="bad_request")
    try:
        up = await service.append(me.device_pk, upload_id, int(offset), length, request.stream())
    except ClientDisconnect:
        raise BadRequest("client disconnected during the chunk", code="truncated") from None
    return _upload_out(service, up, response)


@router.post(
    "/uploads/{upload_id}/finish",
    status_code=201,
    response_model=AttachmentCreated,
    responses={
        200: {"model": AttachmentCreated, "description": "finished before: the same attachment"},
        **error_responses(404, 409),
    },
)
async def finish_upload(
    upload_id: str, response: Response, me: CurrentDevice, service: AttachmentsDep
) -> AttachmentCreated:
    """Make the complete upload an attachment (idempotent)."""
    info, created = await service.finish(me.device_pk, upload_id)
    if not created:
        response.status_code = 200
    return AttachmentCreated(id=info.id, size=info.size, expires_at=info.expires_at)


@router.delete("/uploads/{upload_id}", status_code=204, responses=error_responses(404))
async def cancel_upload(upload_id: str, me: CurrentDevice, service: AttachmentsDep) -> Response:
    """Abandon an upload (its bytes are deleted at once)."""
    await service.cancel_upload(me.device_pk, upload_id)
    return Response(status_code=204)


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


@router.delete("/{attachment_id}", status_code=204, responses=error_responses(403, 404))
async def delete_attachment(
    attachment_id: str, me: CurrentDevice, service: AttachmentsDep
) -> Response:
    """Delete a finished attachment this device uploaded (its bytes at once, its quota
    freed); an id no longer stored is 204 too."""
    await service.delete(me.device_pk, attachment_id)
    return Response(status_code=204)
