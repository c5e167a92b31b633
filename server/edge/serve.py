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

Garbage collection (:func:`serving_gc`, entered by ``vox-relay serve`` after every other
lifespan hook): what start-up built (modules, routes, mappers: ~100,000 tracked objects) is
moved out of the cyclic collector's reach with ``gc.freeze()``, and the young generation is
collected every :data:`GC_YOUNG_THRESHOLD` allocations instead of 700. Before, a loaded relay
ran a young collection every ~700 allocations (a message allocates several hundred tracked
objects) and now and then a full one walking all of start-up's objects — each a pause in
which no frame is read. Reference counting still frees almost everything at once; the
collector only finds cycles, and a cycle now lives a little longer.

Memory (:func:`release_free_heap`, the last step of :func:`serving_gc`): start-up leaves
about 1 MB of freed chunks inside glibc's heap, which glibc keeps resident; ``malloc_trim(0)``
hands their pages back to the kernel. Where the C library has no ``malloc_trim`` (musl,
macOS) nothing is done.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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

__all__ = ["GC_YOUNG_THRESHOLD", "release_free_heap", "serving_gc", "uvicorn_config"]

#: Allocations (of objects the cyclic collector tracks) between two young-generation
#: collections in the serving process (Python's default: 700).
GC_YOUNG_THRESHOLD = 20_000


@asynccontextmanager
async def serving_gc(app: FastAPI) -> AsyncIterator[None]:
    """Freeze what start-up built and collect the young generation less often, then give
    the C heap's free pages back (module doc).

    Entered last among the lifespan hooks, so that the frozen objects include the open
    database engine and the feature layers' state; only the serving process uses it (a relay
    built in a test process leaves that process's collector and heap alone).
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    release_free_heap()
    yield


def release_free_heap() -> bool:
    """glibc's ``malloc_trim(0)``: the heap's free pages go back to the kernel (module doc).

    False when this C library has none (nothing done). ``ctypes`` is imported here, by the
    serving process only.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):  # no dlopen(NULL), or not glibc (musl has no trim)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


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
