"""Content-free Web Push to offline devices (RFC 8030, 8291, 8292; ``docs/protocol-relay.md``).

Wiring, in the app factory (after the delivery layer, whose hub it observes)::

    app.include_router(push.router, dependencies=v1)
    relay_state(app).lifespan_hooks.append(push.lifespan)

``lifespan(app)`` (when ``push.enabled``) names the VAPID key file (read when first used),
starts the :class:`PushDispatcher` as ``RelayState.push`` and makes it the hub's observer; otherwise
``RelayState.push`` is ``None`` and the routes answer 404 ``push_disabled``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.push.presence import Coalescer, Presence
from server.push.routes import router
from server.push.sender import PushConfig, PushDispatcher
from server.push.vapid import VapidKey
from server.settings import Settings
from server.state import relay_state

__all__ = ["PushConfig", "PushDispatcher", "lifespan", "router", "vapid_subject"]


def vapid_subject(settings: Settings) -> str:
    """``push.subject``, else the https ``public_url``, else a local ``mailto:``."""
    if settings.push.subject:
        return settings.push.subject
    if settings.public_url and settings.public_url.startswith("https://"):
        return settings.public_url
    return "mailto:vox-relay@localhost"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the push dispatcher (if enabled) and attach it to the delivery hub."""
    state = relay_state(app)
    settings = state.settings
    cfg = settings.push
    state.push = None
    if not cfg.enabled:
        yield
        return
    key_file = cfg.vapid_key_file or settings.data_dir / "vapid_private_key.pem"
    vapid = VapidKey(key_file, vapid_subject(settings))  # read (or created) when first used
    vapid.check_permissions()
    hub = state.hub
    redis = state.redis
    # Tests may tune PushConfig fields (e.g. retry delays) this way.
    overrides = state.push_overrides
    config = PushConfig(
        ttl_seconds=cfg.ttl_seconds,
        urgency=cfg.urgency,
        request_timeout=cfg.request_timeout_seconds,
        max_attempts=cfg.max_attempts,
        allow_loopback=cfg.allow_loopback_endpoints,
        **overrides,
    )
    dispatcher = PushDispatcher(
        state.sessions,
        vapid,
        config,
        Presence(redis, settings.redis_prefix, hub.node_id),
        Coalescer(redis, settings.redis_prefix, cfg.coalesce_seconds, state.clock),
        state.metrics.registry,
        clock=state.clock,
    )
    await dispatcher.start()
    state.push = dispatcher
    hub.observer = dispatcher
    try:
        yield
    finally:
        if hub.observer is dispatcher:
            hub.observer = None
        await dispatcher.stop()
