"""The one place that turns an app + settings into a uvicorn server (CLI and test harness).

WebSocket settings: the sans-I/O ``websockets`` implementation, **no per-message deflate**
(ciphertext does not compress, and each deflate context costs memory per connection),
pings every 20 s (20 s timeout), frames capped at ``limits.max_frame_bytes``.

Connection hygiene (:mod:`server.edge.connections`): the HTTP and WebSocket protocols are uvicorn's
httptools and sans-I/O ``websockets`` ones, subclassed to admit connections through one
:class:`~server.edge.connections.ConnectionGuard` (total and per-address caps, a reserve for
``/healthz``/``/readyz``/``/metrics``) and to enforce the request-head deadline; the guard is
``RelayState.connection_guard``. Idle keep-alive connections close after
``limits.keepalive_timeout_seconds``.

:func:`lean_serving_process` keeps out of the serving process what serving never uses (see
its docstring; ``docs/self-hosting.md``, "Memory").
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from fastapi import FastAPI

from server.edge.connections import (
    ConnectionGuard,
    GuardCollector,
    protocol_classes,
    raise_open_file_limit,
)
from server.settings import Settings
from server.state import relay_state

__all__ = ["lean_serving_process", "uvicorn_config"]

#: Modules that ``vox-relay serve`` blocks (``sys.modules[name] = None``: importing one raises
#: ``ImportError``) because only a compatibility probe would load them.
BLOCKED_MODULES = ("pydantic.v1",)


def lean_serving_process() -> None:
    """Block the modules of :data:`BLOCKED_MODULES` in this process (before the app is built).

    ``pydantic.v1`` (Pydantic 1's API, kept inside Pydantic 2: 1.4 MB of Python objects,
    about 1.6 MB resident) is loaded by FastAPI only to ask whether a route's response model is
    a Pydantic 1 class (``try: from pydantic import v1 except ImportError: return False``); the
    relay has none, so the probe's answer is the same without it. Called by ``vox-relay serve``
    only (the serving process); a module already imported is left alone.
    """
    for name in BLOCKED_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def uvicorn_config(
    app: FastAPI, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000
) -> uvicorn.Config:
    """A ``uvicorn.Config`` with the relay's HTTP and WebSocket settings."""
    raise_open_file_limit()  # every socket is a file: take all the kernel allows (logged)
    guard = ConnectionGuard.from_settings(settings)
    state = relay_state(app)
    state.connection_guard = guard
    registry = state.metrics.registry
    if state.guard_collector is not None:  # the same app served again (tests)
        registry.unregister(state.guard_collector)
    state.guard_collector = GuardCollector(guard)
    registry.register(state.guard_collector)
    http_protocol, ws_protocol = protocol_classes(guard)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        http=http_protocol,
        ws=ws_protocol,
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_max_size=settings.limits.max_frame_bytes,
        ws_max_queue=16,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.limits.keepalive_timeout_seconds,  # type: ignore[arg-type]
        log_config=None,
        access_log=settings.access_log,
    )
    # uvicorn switches the access logger off globally when access_log is False; make the
    # logger follow this server's setting (records go to the root handler as JSON).
    logging.getLogger("uvicorn.access").propagate = settings.access_log
    return config
