"""``POST /v1/auth/challenge`` and ``POST /v1/auth/token`` without FastAPI's request path.

Logging a device in is two small requests, and FastAPI's part of each (routing, resolving
seven dependencies, parsing and validating the body, serialising the response model) cost
about three quarters of the relay's CPU per login. :class:`LoginFastPath`, a pure ASGI
middleware just outside the app's exception handling (inside the connection guard, HTTP
metrics and body limit, which thus still apply), answers a **well-formed** request itself with
the same calls as :mod:`server.auth.routes`: the per-address request limit, the challenge
limit, :func:`~server.auth.service.create_challenge` / :func:`~server.auth.service.issue_token`,
the same metrics and ``auth_failed`` log, the same JSON. Well-formed means
``Content-Type: application/json`` and a JSON object of exactly the fields of
:class:`wire.rest.ChallengeIn` / :class:`wire.rest.TokenIn`, each valid (username pattern,
device id 1 ..= 2^32-1 and not a boolean, strict padded base64). Anything else goes on, body
replayed, to the FastAPI routes, so every validation error answer is theirs, unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.auth import routes, service
from server.errors import DomainError, error_body
from server.logs import log_event
from server.state import RelayState
from wire.encoding import U32_MAX, USERNAME_PATTERN, WireDecodeError, b64, unb64

__all__ = ["LoginFastPath"]

CHALLENGE_PATH = "/v1/auth/challenge"
TOKEN_PATH = "/v1/auth/token"  # noqa: S105 - a path
_CHALLENGE_FIELDS = frozenset({"username", "device_id"})
_TOKEN_FIELDS = frozenset({"username", "device_id", "nonce", "signature"})
# fullmatch: pydantic's (Rust) ``$`` does not accept a trailing newline, nor does this.
_USERNAME = re.compile(USERNAME_PATTERN.removeprefix("^").removesuffix("$"))
#: JSONResponse's encoding (``json.dumps`` with these arguments builds an encoder per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _well_formed(body: object, fields: frozenset[str]) -> dict[str, Any] | None:
    """The body's fields if FastAPI would accept them as they are, else ``None``."""
    if not isinstance(body, dict) or body.keys() != fields:
        return None
    username, device_id = body["username"], body["device_id"]
    if not isinstance(username, str) or _USERNAME.fullmatch(username) is None:
        return None
    if type(device_id) is not int or not 1 <= device_id <= U32_MAX:
        return None
    out: dict[str, Any] = {"username": username, "device_id": device_id}
    for name in fields - _CHALLENGE_FIELDS:
        value = body[name]
        if not isinstance(value, str):
            return None
        try:
            out[name] = unb64(value)
        except WireDecodeError:
            return None
    return out


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.lower() == b"application/json")
    return False


class LoginFastPath:
    """Answer well-formed login requests directly (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, relay: RelayState) -> None:
        self.app = app
        self.relay = relay
        #: The routes' own objects: what the HTTP metrics label requests with.
        self._routes: dict[str, BaseRoute] = {
            path: route
            for route in routes.router.routes
            if (path := getattr(route, "path", "")) in (CHALLENGE_PATH, TOKEN_PATH)
            and "POST" in getattr(route, "methods", ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or path not in (CHALLENGE_PATH, TOKEN_PATH)
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        fields = _CHALLENGE_FIELDS if path == CHALLENGE_PATH else _TOKEN_FIELDS
        try:
            body = _well_formed(json.loads(raw), fields)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep: the route says how
            body = None
        if body is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["route"] = self._routes[path]
        client = scope.get("client")
        address = client[0] if client else "unknown"  # as server.deps.client_ip
        try:
            await self.relay.limiters.ip.acquire(address)  # the /v1 routers' per_ip_rate_limit
            if path == CHALLENGE_PATH:
                answer = await self._challenge(address, body)
            else:
                answer = await self._token(body)
        except DomainError as exc:
            await _send_json(send, exc.status, error_body(exc.code, exc.message), exc.headers())
            return
        await _send_json(send, 200, answer, {})

    async def _challenge(self, address: str, body: dict[str, Any]) -> dict[str, Any]:
        """As :func:`server.auth.routes.challenge`."""
        relay = self.relay
        await relay.limiters.challenge.acquire(address)
        limits = relay.settings.limits
        nonce, expires = await service.create_challenge(
            relay.login_db,
            body["username"],
            body["device_id"],
            now=relay.clock.now(),
            ttl=limits.challenge_ttl_seconds,
            requester=service.requester_tag(address),
            bounds=service.ChallengeBounds(
                per_device=limits.max_challenges_per_device,
                per_requester=limits.max_challenges_per_address_per_device,
            ),
        )
        return {"nonce": b64(nonce), "expires_at": expires}

    async def _token(self, body: dict[str, Any]) -> dict[str, Any]:
        """As :func:`server.auth.routes.token`."""
        relay = self.relay
        try:
            value, expires = await service.issue_token(
                relay.login_db,
                body["username"],
                body["device_id"],
                body["nonce"],
                body["signature"],
                now=relay.clock.now(),
                ttl=relay.settings.limits.token_ttl_seconds,
            )
        except DomainError as exc:
            relay.metrics.auth_failures.inc()
            log_event(
                "auth_failed",
                logging.WARNING,
                code=exc.code,
                username=body["username"],
                device_id=body["device_id"],
            )
            raise
        relay.metrics.tokens_issued.inc()
        return {
            "token": value,
            "token_type": "Bearer",
            "expires_at": expires,
            "device_id": body["device_id"],
        }


async def _send_json(
    send: Send, status: int, content: dict[str, Any], headers: dict[str, str]
) -> None:
    """What ``JSONResponse(content, status, headers)`` sends."""
    data = _ENCODER.encode(content).encode("utf-8")
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw += [(b"content-length", str(len(data)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands ``body`` back once, then reads the connection again."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
