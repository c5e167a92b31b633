"""``Annotated`` route dependencies: settings, clock, DB session, current device, rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth.service import AuthenticatedDevice, authenticate_token
from server.clock import Clock
from server.errors import Unauthorized
from server.metrics import Metrics
from server.notify import DeviceNotifier
from server.ratelimit import Limiter
from server.settings import Settings

__all__ = [
    "ClockDep",
    "CurrentDevice",
    "MetricsDep",
    "NotifierDep",
    "SessionDep",
    "SettingsDep",
    "bearer_token",
    "client_ip",
    "per_ip_rate_limit",
]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _notifier(request: Request) -> DeviceNotifier:
    notifier: DeviceNotifier = request.app.state.notifier
    return notifier


SettingsDep = Annotated[Settings, Depends(_settings)]
#: The relay's one clock (``create_app(settings, clock=...)``); services take ``now=clock.now()``.
ClockDep = Annotated[Clock, Depends(_clock)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
NotifierDep = Annotated[DeviceNotifier, Depends(_notifier)]


#: Declares the bearer scheme in the OpenAPI document (``security`` on every operation that
#: needs a token); the checks and their error codes are :func:`bearer_token`'s.
_BEARER_SCHEME = HTTPBearer(auto_error=False, description="a token from POST /v1/auth/token")


def bearer_token(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER_SCHEME)],
) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (never a query parameter)."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization: Bearer header", code="missing_token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", code="missing_token")
    return token.strip()


async def _current_device(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    token: Annotated[str, Depends(bearer_token)],
) -> AuthenticatedDevice:
    try:
        return await authenticate_token(session, token, now=clock.now())
    except Unauthorized:
        _metrics(request).auth_failures.inc()
        raise
    finally:
        # The auth lookup is a read; end it so the route starts a fresh transaction.
        await session.rollback()


CurrentDevice = Annotated[AuthenticatedDevice, Depends(_current_device)]


def client_ip(request: Request) -> str:
    """The client address (uvicorn resolves ``X-Forwarded-For`` from trusted proxies)."""
    return request.client.host if request.client else "unknown"


async def per_ip_rate_limit(request: Request) -> None:
    """Router-wide dependency: ``limits.requests_per_minute_per_ip`` for every REST call
    (shared by all relay processes when Redis is configured)."""
    limiter: Limiter = request.app.state.ip_limiter
    await limiter.acquire(client_ip(request))
