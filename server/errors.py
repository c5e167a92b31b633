"""Domain errors raised by services, and their one mapping to HTTP responses.

Every error carries a stable machine ``code`` (the ``error`` field of the JSON body, a
:class:`wire.codes.RestErrorCode` value; ``tests/wire`` checks every code the relay raises is
one), a
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
from starlette.routing import Match

from wire.codes import RestErrorCode

__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "Forbidden",
    "Gone",
    "InsufficientStorage",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "allowed_methods",
    "error_body",
    "install_error_handlers",
]


class DomainError(Exception):
    """Base of every relay error that reaches a client."""

    status: int = 400
    code: str = RestErrorCode.BAD_REQUEST

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
    code = RestErrorCode.BAD_REQUEST


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
    code = RestErrorCode.NOT_FOUND


class Gone(DomainError):
    """The resource existed and was deleted for good, e.g. a deleted account (410)."""

    status = 410
    code = RestErrorCode.ACCOUNT_DELETED


class Conflict(DomainError):
    """The request conflicts with stored state (409)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    """A body, batch or field over its limit (413)."""

    status = 413
    code = RestErrorCode.TOO_LARGE


class RateLimited(DomainError):
    """Too many requests; retry after ``retry_after`` seconds (429)."""

    status = 429
    code = RestErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InsufficientStorage(DomainError):
    """The relay will not store more: free disk below the watermark, or a storage quota
    (``quota_exceeded``) reached (507)."""

    status = 507
    code = RestErrorCode.INSUFFICIENT_STORAGE


class Unavailable(DomainError):
    """A dependency (database, Redis) is unreachable (503)."""

    status = 503
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, str]:
    """The JSON body of every error response."""
    return {"error": code, "message": message}


#: FastAPI's ``HTTPException`` detail when a JSON body cannot be decoded at all (bad UTF-8,
#: nesting too deep): the same failure as a JSON syntax error.
_FASTAPI_BODY_PARSE_DETAIL = "There was an error parsing the body"


def _describe_validation(errors: list[Any]) -> tuple[int, str, str]:
    """``(status, code, message)`` of a request that failed validation."""
    for err in errors:
        where = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            return 400, RestErrorCode.MALFORMED_JSON, "request body is not valid JSON"
        if where == ("body",) and err.get("type") == "missing":
            return (
                400,
                RestErrorCode.MALFORMED_JSON,
                "request body is empty; expected a JSON object",
            )
        if where == ("body",) and isinstance(err.get("input"), bytes | bytearray):
            # FastAPI hands the raw bytes on when the Content-Type is not JSON.
            return (
                415,
                RestErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "send the request body as JSON with Content-Type: application/json",
            )
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return 422, RestErrorCode.INVALID_REQUEST, "; ".join(parts)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (for a 405's ``Allow``)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    """Map domain, validation and routing errors to ``{"error", "message"}`` JSON responses."""

    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers()
        )

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, code, message = _describe_validation(list(exc.errors()))
        return JSONResponse(error_body(code, message), status_code=status)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_DETAIL:
            code: str = RestErrorCode.MALFORMED_JSON
            detail = "request body is not valid JSON"
        else:
            codes: dict[int, str] = {
                404: RestErrorCode.NOT_FOUND,
                405: RestErrorCode.METHOD_NOT_ALLOWED,
                413: RestErrorCode.BODY_TOO_LARGE,
            }
            code = codes.get(exc.status_code, "http_error")
            detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by
            # several routes (GET and PUT) must name them all.
            allow = allowed_methods(request)
            headers["Allow"] = ", ".join(allow)
            detail = f"method {request.method} not allowed here; use {', '.join(allow)}"
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=headers)

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
        return JSONResponse(
            error_body(RestErrorCode.INTERNAL, "internal server error"), status_code=500
        )

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
