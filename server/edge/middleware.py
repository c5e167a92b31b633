"""Pure ASGI middleware: connection admission, request body limit and HTTP metrics.

:class:`ConnectionGuardMiddleware` acts on what :mod:`server.edge.connections` recorded for the
request's TCP connection: a connection admitted from the reserve (the relay is at
``max_connections``) may only ask for ``/healthz``, ``/readyz`` or ``/metrics`` (anything else:
``503 overloaded``); a connection from a trusted proxy is counted under the client address
the proxy names, and refused (``429 too_many_connections``) if that address is at its cap.

:class:`BodyLimitMiddleware` reads at most ``max_bytes`` of a request body before the app
sees it and answers ``413 {"error": "body_too_large", ...}`` otherwise (``Content-Length``
is checked first, chunked bodies are counted). An oversized body is read and dropped up to
``drain_bytes`` before the 413 goes out with ``Connection: close``, so that a client still
writing reads the answer instead of a reset; ``Expect: 100-continue`` is answered at once.
Paths under ``exempt_prefixes`` (streaming uploads with their own limit, e.g.
``/v1/attachments``) pass through untouched.

:class:`BodyDeadlineMiddleware` bounds how long a request body may take to arrive (a
slowloris on the body would otherwise hold a connection and a request forever): the time
spent waiting for body bytes may be at most ``grace_seconds`` plus one second per
``min_bytes_per_second`` bytes received so far, so a slow but steady upload of any size
goes through, a trickle does not. Past it the request is answered ``408
{"error": "body_timeout", ...}`` with ``Connection: close`` (the connection then closes
lingering, :class:`~server.edge.connections.GuardedHttpProtocol`, so that the client, still
sending, reads the 408 rather than a reset). Only waiting for the client counts: time the
app spends between reads (writing an attachment to disk) does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.clock import Clock
from server.edge.connections import OPS_PATHS, Tracked
from server.errors import error_body
from server.metrics import Metrics
from wire.codes import RestErrorCode

__all__ = [
    "BodyDeadlineMiddleware",
    "BodyLimitMiddleware",
    "ConnectionGuardMiddleware",
    "MetricsMiddleware",
]


async def _send_json(
    send: Send, status: int, body: dict[str, str], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class ConnectionGuardMiddleware:
    """Serve only the operator paths from the reserve; count proxied clients by address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked: Tracked | None = scope.get("vox.connection")
        if scope["type"] != "http" or tracked is None or tracked.guard is None:
            await self.app(scope, receive, send)
            return
        retry = ((b"retry-after", b"5"),)
        if tracked.operator and scope["path"] not in OPS_PATHS:
            body = error_body("not_found", "the operator listener serves only health and metrics")
            await _send_json(send, 404, body)
            return
        if tracked.reserve_only and scope["path"] not in OPS_PATHS:
            tracked.guard.refused["reserve"] += 1
            body = error_body("overloaded", "the relay is at its connection limit; retry later")
            await _send_json(send, 503, body, retry)
            return
        client = scope.get("client")
        if client and not tracked.guard.rekey(tracked, str(client[0])):
            body = error_body("too_many_connections", "too many open connections from this address")
            await _send_json(send, 429, body, retry)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413 JSON error."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        exempt_prefixes: Sequence[str] = (),
        limited_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = tuple(exempt_prefixes)
        #: Exact paths under an exempt prefix whose (JSON) bodies are limited all the same.
        self.limited = frozenset(limited_paths)
        #: How much of an oversized body is read (and dropped) before the 413 is sent.
        self.drain_bytes = max(8 * max_bytes, 8 * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["path"].startswith(self.exempt) and scope["path"] not in self.limited
        ):
            await self.app(scope, receive, send)
            return
        too_large = error_body(
            "body_too_large", f"request body exceeds the limit of {self.max_bytes} bytes"
        )
        headers = dict(scope.get("headers", ()))
        value = headers.get(b"content-length")
        if value is not None:
            try:
                declared = int(value)
            except ValueError:
                await _send_json(send, 400, error_body("bad_request", "invalid Content-Length"))
                return
            if declared > self.max_bytes:
                # Read the body first (up to a bound), so that the client, still writing,
                # sees the 413 instead of a connection reset; a client that asked
                # "Expect: 100-continue" has not sent it yet and is answered at once.
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await self._drain(receive, {"more_body": True}, 0)
                await _send_json(send, 413, too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._drain(receive, message, size)
                await _send_json(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, message: Message, size: int) -> None:
        # Read (and drop) the rest of a moderately oversized body so the client sees the
        # 413 instead of a reset connection; give up past a hard cap (the answer then
        # closes the connection while the client may still be sending).
        cap = self.drain_bytes
        while message.get("more_body", False) and size <= cap:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))


class _BodyTimeout(Exception):
    """Raised from ``receive`` when the body is late (caught by the middleware)."""


class BodyDeadlineMiddleware:
    """Answer ``408 body_timeout`` when a request body arrives slower than allowed."""

    def __init__(
        self, app: ASGIApp, *, grace_seconds: float, min_bytes_per_second: int, clock: Clock
    ) -> None:
        self.app = app
        self.grace = grace_seconds
        self.rate = min_bytes_per_second
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        waited = 0.0
        received = 0
        complete = False
        timed_out = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal waited, received, complete, timed_out
            if complete:
                return await receive()
            left = self.grace + received / self.rate - waited
            start = self.clock.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):  # no task per read, unlike wait_for
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise _BodyTimeout from None
            finally:
                waited += self.clock.monotonic() - start
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the 408 is (being) sent: whatever the app answers is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:  # _BodyTimeout, or what the app made of it
            if not timed_out:
                raise
        if timed_out and not started:
            tracked: Tracked | None = scope.get("vox.connection")
            if tracked is not None and tracked.guard is not None:
                tracked.guard.refused["body_timeout"] += 1
            message = (
                f"the request body did not arrive in time (allowed: {self.grace:g} s plus"
                f" 1 s per {self.rate} bytes received)"
            )
            await _send_json(send, 408, error_body(RestErrorCode.BODY_TIMEOUT, message))


class MetricsMiddleware:
    """Count HTTP requests by route template and status; time them."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, clock: Clock) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock.monotonic()
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(name, str(status)).inc()
            self.metrics.http_latency.labels(name).observe(self.clock.monotonic() - start)
