"""The relay's app factory: ``create_app(settings)``.

Nothing happens at import time. ``create_app`` builds the relay's one typed container,
:class:`server.state.RelayState` (settings, clock, metrics, rate limiters, disk guard, the
feature layers' lifespan hooks), stored as ``app.state.relay``; the lifespan opens the
database engine (and Redis when configured) into it and closes them on shutdown.

Feature layers plug in below in ``create_app`` with a router and, optionally, a lifespan
hook: an async context manager factory ``hook(app)`` entered after the database and Redis
are up and exited (in reverse order) before they close — the place for background tasks
and graceful WebSocket shutdown. A hook keeps what it starts on the ``RelayState``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI

from server import attachments, delivery, push
from server.accounts import routes as accounts
from server.auth import routes as auth
from server.auth.fastpath import LoginFastPath
from server.auth.maintenance import core_lifespan
from server.clock import Clock
from server.db.engine import create_engine, session_factory
from server.deps import per_ip_rate_limit
from server.diskguard import DiskGuard, free_bytes_of
from server.edge.middleware import (
    BodyDeadlineMiddleware,
    BodyLimitMiddleware,
    ConnectionGuardMiddleware,
    MetricsMiddleware,
)
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.openapi import document_errors, error_responses
from server.ops import routes as ops
from server.prekeys import routes as prekeys
from server.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from server.settings import Settings
from server.state import LifespanHook, RateLimiters, RelayState, relay_state
from server.web import routes as web

__all__ = ["LifespanHook", "create_app"]

#: Paths that stream large bodies and enforce their own limit.
STREAMING_PREFIXES = ("/v1/attachments",)
#: ... except the JSON body that starts a resumable upload.
LIMITED_STREAMING_PATHS = ("/v1/attachments/uploads",)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = relay_state(app)
    settings = state.settings
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.effective_database_url)
        stack.push_async_callback(engine.dispose)
        state.engine = engine
        state.sessions = session_factory(engine)
        state.redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            client = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
            stack.push_async_callback(client.aclose)
            state.redis = client
            # Rate limits shared by every relay process (per-process if Redis fails).

            def shared(local: Limiter, name: str) -> Limiter:
                if not isinstance(local, RateLimiter):
                    return local
                return SharedRateLimiter(
                    client, prefix=settings.redis_prefix, name=name, fallback=local
                )

            limiters = state.limiters
            limiters.ip = shared(limiters.ip, "ip")
            limiters.bundle = shared(limiters.bundle, "bundle")
            limiters.challenge = shared(limiters.challenge, "challenge")
            limiters.registration = shared(limiters.registration, "registration")
        for hook in state.lifespan_hooks:
            await stack.enter_async_context(hook(app))
        yield


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """Build a relay app for ``settings`` (the database is opened by the lifespan).

    ``clock`` is the relay's one clock (default: the system's); a test passes a
    :class:`~server.clock.ShiftedClock` to move every expiry and window forward at once.
    """
    app = FastAPI(title=f"{settings.brand.name} relay", version="1", lifespan=_lifespan)
    limits = settings.limits
    clock = clock or Clock()

    def limiter(capacity: int, per_seconds: float, what: str) -> RateLimiter:
        return RateLimiter(capacity=capacity, per_seconds=per_seconds, what=what, clock=clock)

    state = RelayState(
        settings=settings,
        clock=clock,
        metrics=Metrics(),
        limiters=RateLimiters(
            ip=limiter(limits.requests_per_minute_per_ip, 60, "requests from this address"),
            bundle=limiter(
                limits.bundle_fetches_per_minute_per_device, 60, "prekey bundle fetches"
            ),
            challenge=limiter(
                limits.challenges_per_minute_per_address,
                60,
                "login challenges from this address",
            ),
            registration=limiter(
                limits.registrations_per_hour_per_ip, 3600, "registrations from this address"
            ),
        ),
        disk=DiskGuard(limits.min_free_disk_bytes, free_bytes_of(settings.data_dir), clock=clock),
        lifespan_hooks=[core_lifespan],
    )
    app.state.relay = state
    install_error_handlers(app)
    document_errors(app)
    # Innermost: well-formed logins skip FastAPI's request path (the layers below apply).
    app.add_middleware(LoginFastPath, relay=state)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=limits.max_body_bytes,
        exempt_prefixes=STREAMING_PREFIXES,
        limited_paths=LIMITED_STREAMING_PATHS,
    )
    app.add_middleware(
        BodyDeadlineMiddleware,
        grace_seconds=limits.body_timeout_seconds,
        min_bytes_per_second=limits.min_body_bytes_per_second,
        clock=clock,
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, clock=clock)
    app.add_middleware(ConnectionGuardMiddleware)  # reserve and per-address caps (HTTP)

    app.include_router(ops.router)
    v1 = [Depends(per_ip_rate_limit)]
    limited = error_responses(429)  # what per_ip_rate_limit adds to every operation
    for module in (accounts, auth, prekeys):
        app.include_router(module.router, dependencies=v1, responses=limited)

    # Feature layers (routers + lifespan hooks).
    app.include_router(delivery.router)
    app.add_middleware(delivery.WebSocketFastPath)  # outermost: /v1/ws skips HTTP layers
    state.lifespan_hooks.append(delivery.lifespan)
    app.include_router(attachments.router, dependencies=v1, responses=limited)
    state.lifespan_hooks.append(attachments.lifespan)
    # Every push route answers 404 push_disabled when push is turned off.
    app.include_router(push.router, dependencies=v1, responses=error_responses(404, 429))
    state.lifespan_hooks.append(push.lifespan)  # after delivery: observes its hub
    web.mount(app, settings)  # the browser client at / (clients/web/dist)
    return app
