"""JSON-RPC 2.0 framing for ``vox daemon``, sans-I/O: one JSON object per line (UTF-8).

Requests ``{"jsonrpc": "2.0", "id": ..., "method": ..., "params": {...}}`` (``params`` by
name, or omitted); responses carry ``result`` or ``error`` (``code``, ``message``, ``data``);
notifications (no ``id``) go from the daemon to subscribed clients. Error codes: the standard
ones (:data:`PARSE_ERROR` … :data:`INTERNAL_ERROR`) and :data:`CLIENT_ERROR` for an SDK
failure, with ``data.type`` naming the :class:`~clients.sdk.errors.ClientError` subclass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLIENT_ERROR",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "QUEUED",
    "Request",
    "RpcError",
    "encode",
    "error",
    "notification",
    "parse_request",
    "result",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CLIENT_ERROR = -32000
QUEUED = -32001
"""The relay could not be reached; the message is queued (sent later, in order)."""

MAX_LINE = 1024 * 1024

Id = str | int | None


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request (``id`` is ``None`` for a notification from the client)."""

    id: Id
    method: str
    params: dict[str, Any] = field(default_factory=dict)


class RpcError(Exception):
    """An error answer: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def encode(obj: dict[str, Any]) -> bytes:
    """One line of compact JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def result(request_id: Id, value: Any) -> bytes:
    """A success response."""
    return encode({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Id, err: RpcError) -> bytes:
    """An error response."""
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.data is not None:
        body["data"] = err.data
    return encode({"jsonrpc": "2.0", "id": request_id, "error": body})


def notification(method: str, params: dict[str, Any]) -> bytes:
    """A notification (no ``id``)."""
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def parse_request(line: bytes) -> Request:
    """Parse one request line; raises :class:`RpcError` (with the request's id, if any,
    in ``data['id']``) for anything that is not a valid JSON-RPC 2.0 request."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        raise RpcError(PARSE_ERROR, "parse error: not valid JSON") from None
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")
    request_id = value.get("id")
    if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
        raise RpcError(INVALID_REQUEST, "invalid request: bad id")
    where = {"id": request_id}
    if value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', where)
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "invalid request: no method", where)
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "invalid params: pass them by name (an object)", where)
    return Request(request_id, method, params)
