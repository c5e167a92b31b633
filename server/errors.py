"""Domain errors raised by services, and their one mapping to HTTP responses.

Every error carries a stable machine ``code`` (the ``error`` field of the JSON body), a
human ``message`` and the HTTP ``status`` it maps to. Routes never build error responses
themselves; :func:`install_error_handlers` turns every :class:`DomainError` (and FastAPI's
own validation / routing errors) into ``{"error": code, "message": text}``.

The WebSocket side maps the same errors to close codes / error frames in its own module,
using ``code`` and ``message``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InsufficientStorage",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "error_body",
    "install_error_handlers",
]


class DomainError(Exception):
    """Base of every relay error that reaches a client."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. ``Retry-After``)."""
        return {}


class BadRequest(DomainError):
    """Structurally valid JSON with an unacceptable value (400)."""

    status = 400
    code = "bad_request"


class Unauthorized(DomainError):
    """Missing, unknown, expired or revoked credentials; bad signatures (401)."""

    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    """Authenticated, but not allowed to do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(DomainError):
    """Unknown user, device or resource (404)."""

    status = 404
    code = "not_found"


class Conflict(DomainError):
    """The request conflicts with stored state (409)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    """A body, batch or field over its limit (413)."""

    status = 413
    code = "too_large"


class RateLimited(DomainError):
    """Too many requests; retry after ``retry_after`` seconds (429)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InsufficientStorage(DomainError):
    """The relay will not store more: free disk below the watermark, or a storage quota
    (``quota_exceeded``) reached (507)."""

    status = 507
    code = "insufficient_storage"


class Unavailable(DomainError):
    """A dependency (database, Redis) is unreachable (503)."""

    status = 503
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, str]:
    """The JSON body of every error response."""
    return {"error": code, "message": message}


def _describe_validation(errors: list[Any]) -> tuple[str, str]:
    for err in errors:
        if err.get("type") == "json_invalid":
            return "malformed_json", "request body is not valid JSON"
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid_request", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain, validation and routing errors to ``{"error", "message"}`` JSON responses."""

    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers()
        )

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        code, message = _describe_validation(list(exc.errors()))
        status = 400 if code == "malformed_json" else 422
        return JSONResponse(error_body(code, message), status_code=status)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        code = codes.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse(
            error_body(code, detail), status_code=exc.status_code, headers=exc.headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type and route only: exception messages may quote request data.
        logging.getLogger("vox").error(
            "internal_error",
            extra={
                "fields": {
                    "event": "internal_error",
                    "exc_type": exc.__class__.__name__,
                    "path": request.url.path,
                }
            },
        )
        return JSONResponse(error_body("internal", "internal server error"), status_code=500)

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
