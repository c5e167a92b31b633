"""The relay's app factory: ``create_app(settings)``.

Nothing happens at import time. The lifespan opens the database engine (and Redis when
configured) and closes them on shutdown. ``app.state`` carries, for every layer:

* ``settings`` — :class:`server.settings.Settings`
* ``clock`` — :class:`server.clock.Clock`, the relay's one clock (``create_app(..., clock=)``)
* ``metrics`` — :class:`server.metrics.Metrics` (add collectors to ``metrics.registry``)
* ``notifier`` — :class:`server.notify.DeviceNotifier` (default: no-op; the delivery hub
  replaces it)
* ``engine`` / ``sessions`` — ``AsyncEngine`` and ``async_sessionmaker`` (set at startup)
* ``redis`` — ``redis.asyncio.Redis`` or ``None`` (set at startup)
* ``ip_limiter`` / ``bundle_limiter`` / ``registration_limiter`` —
  :class:`server.ratelimit.RateLimiter` (per process), replaced at startup by
  :class:`server.ratelimit.SharedRateLimiter` when Redis is configured
* ``disk`` — :class:`server.diskguard.DiskGuard`, the free-disk watermark (uploads and
  sends are refused below it; replace ``disk.free_bytes`` to probe differently)

Feature layers plug in below in ``create_app`` with a router and, optionally, a lifespan
hook: an async context manager factory ``hook(app)`` entered after the database and Redis
are up and exited (in reverse order) before they close — the place for background tasks
and graceful WebSocket shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI

from server import attachments, delivery, push
from server.accounts import routes as accounts
from server.auth import routes as auth
from server.auth.maintenance import core_lifespan
from server.clock import Clock
from server.db.engine import create_engine, session_factory
from server.deps import per_ip_rate_limit
from server.diskguard import DiskGuard, free_bytes_of
from server.edge.middleware import BodyLimitMiddleware, ConnectionGuardMiddleware, MetricsMiddleware
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.notify import NullNotifier
from server.openapi import document_errors, error_responses
from server.ops import routes as ops
from server.prekeys import routes as prekeys
from server.ratelimit import RateLimiter, SharedRateLimiter
from server.settings import Settings
from server.web import routes as web

__all__ = ["LifespanHook", "create_app"]

#: A feature's startup/shutdown: ``async with hook(app): ...`` spans the app's life.
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]

#: Paths that stream large bodies and enforce their own limit.
STREAMING_PREFIXES = ("/v1/attachments",)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.effective_database_url)
        stack.push_async_callback(engine.dispose)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            client = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
            stack.push_async_callback(client.aclose)
            app.state.redis = client
            # Rate limits shared by every relay process (per-process if Redis fails).
            for attr, name in (
                ("ip_limiter", "ip"),
                ("bundle_limiter", "bundle"),
                ("challenge_limiter", "challenge"),
                ("registration_limiter", "registration"),
            ):
                local = getattr(app.state, attr)
                if isinstance(local, RateLimiter):
                    shared = SharedRateLimiter(
                        client, prefix=settings.redis_prefix, name=name, fallback=local
                    )
                    setattr(app.state, attr, shared)
        for hook in app.state.lifespan_hooks:
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
    app.state.settings = settings
    app.state.clock = clock
    app.state.metrics = Metrics()
    app.state.notifier = NullNotifier()
    app.state.lifespan_hooks = [core_lifespan]
    app.state.ip_limiter = RateLimiter(
        capacity=limits.requests_per_minute_per_ip,
        per_seconds=60,
        what="requests from this address",
        clock=clock,
    )
    app.state.bundle_limiter = RateLimiter(
        capacity=limits.bundle_fetches_per_minute_per_device,
        per_seconds=60,
        what="prekey bundle fetches",
        clock=clock,
    )
    app.state.challenge_limiter = RateLimiter(
        capacity=limits.challenges_per_minute_per_address,
        per_seconds=60,
        what="login challenges from this address",
        clock=clock,
    )
    app.state.registration_limiter = RateLimiter(
        capacity=limits.registrations_per_hour_per_ip,
        per_seconds=3600,
        what="registrations from this address",
        clock=clock,
    )
    app.state.disk = DiskGuard(
        limits.min_free_disk_bytes, free_bytes_of(settings.data_dir), clock=clock
    )
    install_error_handlers(app)
    document_errors(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=limits.max_body_bytes, exempt_prefixes=STREAMING_PREFIXES
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, clock=clock)
    app.add_middleware(ConnectionGuardMiddleware)  # reserve and per-address caps (HTTP)

    app.include_router(ops.router)
    v1 = [Depends(per_ip_rate_limit)]
    limited = error_responses(429)  # what per_ip_rate_limit adds to every operation
    for module in (accounts, auth, prekeys):
        app.include_router(module.router, dependencies=v1, responses=limited)

    # Feature layers (routers + lifespan hooks).
    app.include_router(delivery.router)
    app.add_middleware(delivery.WebSocketFastPath)  # outermost: /v1/ws skips HTTP layers
    app.state.lifespan_hooks.append(delivery.lifespan)
    app.include_router(attachments.router, dependencies=v1, responses=limited)
    app.state.lifespan_hooks.append(attachments.lifespan)
    # Every push route answers 404 push_disabled when push is turned off.
    app.include_router(push.router, dependencies=v1, responses=error_responses(404, 429))
    app.state.lifespan_hooks.append(push.lifespan)  # after delivery: observes its hub
    web.mount(app, settings)  # the browser client at / (clients/web/dist)
    return app
