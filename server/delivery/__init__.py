"""Store-and-forward messaging over ``/v1/ws`` (see ``docs/protocol-ws.md``).

Wiring, in the app factory::

    app.include_router(delivery.router)
    app.state.lifespan_hooks.append(delivery.lifespan)

``lifespan(app)`` starts the hub (in-process, or Redis pub/sub when ``redis_url`` is set),
the group-commit writer, the TTL sweeper and the slow-consumer watchdog, and installs the hub
as ``app.state.notifier``; on exit it closes every socket with 1001, commits and answers what
was submitted, then stops them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from server.delivery.metrics import DeliveryMetrics
from server.delivery.routes import router
from server.delivery.service import DeliveryConfig, DeliveryService
from server.fanout import Hub
from server.settings import Settings

__all__ = ["DeliveryConfig", "DeliveryService", "lifespan", "router", "start", "stop"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The delivery layer's lifespan hook (``app.state.lifespan_hooks``)."""
    # Tests and benchmarks may tune internal bounds (``DeliveryConfig`` fields) this way.
    overrides: dict[str, Any] = getattr(app.state, "delivery_overrides", {})
    await start(app, app.state.settings, **overrides)
    try:
        yield
    finally:
        await stop(app)


async def start(app: FastAPI, settings: Settings, **overrides: Any) -> DeliveryService:
    """Create and start the node's hub and delivery service on ``app.state``."""
    hub = Hub(settings.redis_url, settings.redis_prefix)
    await hub.start()
    metrics = DeliveryMetrics(app.state.metrics.registry, lambda: hub.connection_count)
    config = DeliveryConfig.from_limits(settings.limits, **overrides)
    service = DeliveryService(app.state.engine, hub, metrics, config)
    await service.start()
    app.state.hub = hub
    app.state.delivery = service
    app.state.notifier = hub
    return service


async def stop(app: FastAPI) -> None:
    """Close every socket with 1001, commit and answer what was submitted, stop the hub."""
    service: DeliveryService | None = getattr(app.state, "delivery", None)
    if service is None:
        return
    await service.going_away()
    await service.stop()
    await service.hub.stop()
