"""Store-and-forward messaging over ``/v1/ws`` (see ``docs/protocol-ws.md``).

Wiring, in the app factory::

    app.include_router(delivery.router)
    app.add_middleware(delivery.WebSocketFastPath)   # optional: fewer frames per socket
    relay_state(app).lifespan_hooks.append(delivery.lifespan)

``lifespan(app)`` starts the hub (in-process, or Redis pub/sub when ``redis_url`` is set),
the group-commit writer, the TTL sweeper and the slow-consumer watchdog, and installs the hub
as the ``RelayState.notifier``; on exit it closes every socket with 1001, commits and answers what
was submitted, then stops them.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI

from server.delivery.budgets import DeviceBudgets
from server.delivery.fanout import Hub, QueuePoller
from server.delivery.metrics import DeliveryMetrics
from server.delivery.routes import WebSocketFastPath, router
from server.delivery.service import DeliveryConfig, DeliveryService
from server.metrics import CounterMetricFamily, Gauge
from server.state import RelayState, relay_state

__all__ = [
    "DeliveryConfig",
    "DeliveryService",
    "WebSocketFastPath",
    "lifespan",
    "router",
    "start",
    "stop",
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The delivery layer's lifespan hook (``RelayState.lifespan_hooks``)."""
    state = relay_state(app)
    # Tests and benchmarks may tune internal bounds (``DeliveryConfig`` fields) this way.
    service = await start(state, **state.delivery_overrides)
    restore = _drain_on_signals(service)
    try:
        yield
    finally:
        restore()
        await stop(state)


def _drain_on_signals(service: DeliveryService) -> Callable[[], None]:
    """On SIGTERM/SIGINT, close sockets with 1001 *before* uvicorn's own shutdown runs.

    uvicorn's shutdown sends 1012 to every WebSocket before the app's lifespan ends; running
    :meth:`DeliveryService.going_away` first gives clients "1001 going away" after every frame
    already answered, then hands the signal on to uvicorn. A second signal goes straight on.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def chain(sig: int, frame: FrameType | None) -> None:
        handler = previous.get(signal.Signals(sig))
        if callable(handler):
            handler(sig, frame)

    def on_signal(sig: int, frame: FrameType | None) -> None:
        if not service.accepting:
            chain(sig, frame)
            return

        def begin() -> None:
            task = loop.create_task(service.going_away())
            task.add_done_callback(lambda _: chain(sig, frame))

        loop.call_soon_threadsafe(begin)

    for sig in signals:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, handler)

    return restore


class _DroppedSignals:
    """``vox_fanout_dropped_signals_total``: fan-out signals this node could not publish
    (outbox full, Redis publish failed); the devices concerned catch up on their next poll or
    reconnect."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> list[CounterMetricFamily]:
        return [
            CounterMetricFamily(
                "vox_fanout_dropped_signals",
                "Fan-out signals this node could not publish to Redis",
                value=float(self._hub.dropped_signals),
            )
        ]


async def start(state: RelayState, **overrides: Any) -> DeliveryService:
    """Create and start the node's hub and delivery service on ``state``."""
    settings = state.settings
    hub = Hub(
        settings.redis_url,
        settings.redis_prefix,
        poller=QueuePoller(state.engine),
        poll_interval=settings.redis_outage_poll_seconds,
    )
    await hub.start()
    registry = state.metrics.registry
    metrics = DeliveryMetrics(registry, lambda: hub.connection_count)
    Gauge(
        "vox_fanout_degraded",
        "1 while Redis is unreachable and this node polls the database (degraded mode)",
        registry=registry,
    ).set_function(lambda: float(hub.degraded))
    registry.register(_DroppedSignals(hub))
    config = DeliveryConfig.from_limits(settings.limits, **overrides)
    budgets = DeviceBudgets(settings.limits, state.clock, state.redis, settings.redis_prefix)
    service = DeliveryService(
        state.engine, hub, metrics, config, budgets, clock=state.clock, storage_low=state.disk.low
    )
    await service.start()
    state.hub = hub
    state.delivery = service
    state.notifier = hub
    return service


async def stop(state: RelayState) -> None:
    """Close every socket with 1001, commit and answer what was submitted, stop the hub."""
    service = state.delivery
    await service.going_away()
    await service.stop()
    await service.hub.stop()
