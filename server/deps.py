"""``Annotated`` route dependencies on the app's :class:`~server.state.RelayState`: the state
itself, settings, clock, DB session, metrics, notifier, rate limiters, the current device.

Every dependency is ``async def``, even those that never await: FastAPI runs a plain ``def``
dependency in a worker thread (a thread hand-off per dependency per request, about a sixth
of a login's CPU when they were plain functions)."""

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
from server.settings import Settings
from server.state import RateLimiters, RelayState, relay_state

__all__ = [
    "ClockDep",
    "CurrentDevice",
    "LimitersDep",
    "MetricsDep",
    "NotifierDep",
    "SessionDep",
    "SettingsDep",
    "StateDep",
    "bearer_token",
    "client_ip",
    "per_ip_rate_limit",
]


async def _state(request: Request) -> RelayState:
    return relay_state(request.app)


StateDep = Annotated[RelayState, Depends(_state)]


async def _settings(state: StateDep) -> Settings:
    return state.settings


async def _clock(state: StateDep) -> Clock:
    return state.clock


async def _session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


async def _metrics(state: StateDep) -> Metrics:
    return state.metrics


async def _notifier(state: StateDep) -> DeviceNotifier:
    return state.notifier


async def _limiters(state: StateDep) -> RateLimiters:
    return state.limiters


SettingsDep = Annotated[Settings, Depends(_settings)]
#: The relay's one clock (``create_app(settings, clock=...)``); services take ``now=clock.now()``.
ClockDep = Annotated[Clock, Depends(_clock)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
NotifierDep = Annotated[DeviceNotifier, Depends(_notifier)]
LimitersDep = Annotated[RateLimiters, Depends(_limiters)]


#: Declares the bearer scheme in the OpenAPI document (``security`` on every operation that
#: needs a token); the checks and their error codes are :func:`bearer_token`'s.
_BEARER_SCHEME = HTTPBearer(auto_error=False, description="a token from POST /v1/auth/token")


async def bearer_token(
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
    session: SessionDep,
    clock: ClockDep,
    metrics: MetricsDep,
    token: Annotated[str, Depends(bearer_token)],
) -> AuthenticatedDevice:
    try:
        return await authenticate_token(session, token, now=clock.now())
    except Unauthorized:
        metrics.auth_failures.inc()
        raise
    finally:
        # The auth lookup is a read; end it so the route starts a fresh transaction.
        await session.rollback()


CurrentDevice = Annotated[AuthenticatedDevice, Depends(_current_device)]


def client_ip(request: Request) -> str:
    """The client address (uvicorn resolves ``X-Forwarded-For`` from trusted proxies)."""
    return request.client.host if request.client else "unknown"


async def per_ip_rate_limit(request: Request, limiters: LimitersDep) -> None:
    """Router-wide dependency: ``limits.requests_per_minute_per_ip`` for every REST call
    (shared by all relay processes when Redis is configured)."""
    await limiters.ip.acquire(client_ip(request))
