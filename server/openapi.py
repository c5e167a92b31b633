"""The OpenAPI document lists every error response of every operation.

Two sources, merged by :func:`document_errors`:

* what a route's own service can refuse, declared on the route with
  ``responses=error_responses(404, 409)``;
* what the plumbing around it can refuse, read off the operation: a JSON body
  (400 ``malformed_json``, 408 ``body_timeout``, 413 ``body_too_large``,
  415 ``unsupported_media_type``, 422 ``invalid_request``), path or query parameters
  (422), the bearer token (401; the operation's ``security``). The per-address rate limit
  (429) is declared where the routers are included with it (``server.app``).

Every error response has the one shared body :class:`wire.rest.ErrorBody`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from wire.rest import ErrorBody

__all__ = ["ERROR_DESCRIPTIONS", "document_errors", "error_responses"]

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "malformed JSON body or an unacceptable value",
    401: "missing, invalid, expired or revoked credentials",
    403: "not allowed",
    404: "unknown user, device or resource",
    409: "conflicts with stored state",
    408: "the request body arrived too slowly (``body_timeout``); the connection closes",
    410: "the account was deleted (``account_deleted``)",
    413: "body, batch or field over its limit",
    415: "the body is not sent as application/json",
    422: "wrong types, missing or unknown fields, pattern mismatch (body, path or query)",
    429: "rate limited (see Retry-After)",
    503: "a dependency (database) is unavailable",
    507: "the relay is low on storage, or a storage quota is used up",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses, each with the shared error body."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def _plumbing_statuses(operation: dict[str, Any]) -> set[int]:
    """The errors an operation can meet before its own code runs."""
    statuses: set[int] = set()
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        statuses |= {400, 408, 413, 415, 422}
    elif content:
        statuses |= {400, 408, 413}
    if operation.get("parameters"):
        statuses.add(422)
    if operation.get("security"):
        statuses.add(401)
    return statuses


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` list every error response with the shared error body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        ref = {"$ref": "#/components/schemas/ErrorBody"}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                for status in sorted(_plumbing_statuses(operation)):
                    responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
                for status, response in responses.items():
                    if status.startswith(("4", "5")):
                        response["content"] = {"application/json": {"schema": ref}}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
