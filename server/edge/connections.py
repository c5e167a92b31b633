"""Connection hygiene below the ASGI app: deadlines, per-address caps, a reserve for operators.

uvicorn's protocols have a keep-alive timeout but no deadline for a request head, and no
notion of "one address holds too many sockets". The relay runs them through two subclasses
(wired by :func:`server.edge.serve.uvicorn_config`) that report to one :class:`ConnectionGuard`:

* :class:`GuardedHttpProtocol` (httptools): every TCP connection is admitted or closed at
  once (total cap, per-address cap of unauthenticated connections), and its request head —
  also a WebSocket upgrade — must be complete within ``header_timeout_seconds`` of the
  connection (or, on a kept-alive connection, of the next request's first byte), or the
  connection is closed. Idle kept-alive connections close after ``keepalive_timeout_seconds``
  (uvicorn's own timer).
  A response that closes the connection (``Connection: close``: a ``408 body_timeout``, a
  ``413`` past its drain) while the request body is still arriving closes *lingering*: the
  relay half-closes (its FIN follows the response), then reads and drops what the client
  still sends until the client hangs up, for at most ``linger_timeout_seconds`` and
  ``max_linger_bytes``, then closes. Closing at once would answer the client's next bytes
  with a reset, and a client that learns of the reset before it has read the response loses
  the response.
* :class:`GuardedWebSocketProtocol` (websockets sans-I/O): frames before authentication may
  be at most :data:`PRE_AUTH_MAX_BYTES`; an oversized frame is answered with close 1009
  ``frame too large`` and the rest of the peer's data is read and dropped for at most
  ``linger_timeout_seconds`` before the TCP connection closes (closing with unread data would
  reset it, and the client would never see the close frame).

Counting. Every connection is counted under its client address as *unauthenticated* until the
``/v1/ws`` endpoint authenticates it (:meth:`ConnectionGuard.promote`), then as
*authenticated*; each kind has its own per-address cap. Behind a trusted proxy
(``forwarded_allow_ips``) the TCP peer is the proxy, so such connections are counted under the
client address the proxy names (``X-Forwarded-For``) once their head is read
(:meth:`ConnectionGuard.rekey`, from :class:`server.edge.middleware.ConnectionGuardMiddleware`).

Reserve. Past ``max_connections`` open connections, up to ``connection_reserve`` more are
accepted, but they may only ask for ``/healthz``, ``/readyz`` or ``/metrics``: anything else
is answered ``503`` and closed. So monitoring keeps working when the relay is full.

Operator listener. With ``ops_port`` set, connections to that port are outside every cap and
may only ask for those three paths (others: ``404``; WebSocket: close 1008). Its accept queue
is not the one a connection flood fills, so probes keep their latency even then.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from server.logs import log_event

try:  # websockets' C speedup, as its own frame parser uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - no compiler where websockets was installed
    from websockets.utils import apply_mask
from server.metrics import CounterMetricFamily, GaugeMetricFamily, MetricFamily

__all__ = [
    "OPS_PATHS",
    "PRE_AUTH_MAX_BYTES",
    "ConnectionGuard",
    "FrameHandler",
    "GuardCollector",
    "GuardedHttpProtocol",
    "GuardedWebSocketProtocol",
    "Tracked",
    "raise_open_file_limit",
]

log = logging.getLogger("vox.connections")

#: Paths served from the reserve when the relay is at ``max_connections``.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Largest frame accepted before the ``auth`` frame (an ``auth`` frame is far smaller).
PRE_AUTH_MAX_BYTES = 4096
#: Open files kept for everything that is not a client connection (database, logs, ...).
_FD_MARGIN = 256


@dataclass(eq=False)
class Tracked:
    """One TCP connection as the guard counts it."""

    address: str
    trusted_peer: bool
    reserve_only: bool = False
    #: Arrived on the operator-only listener (``ops_port``): outside every cap.
    operator: bool = False
    authenticated: bool = False
    closed: bool = False
    transport: asyncio.BaseTransport | None = field(default=None, repr=False)
    guard: ConnectionGuard | None = field(default=None, repr=False)


class ConnectionGuard:
    """Counts open connections per client address and in total; decides who gets in."""

    def __init__(
        self,
        *,
        max_connections: int,
        reserve: int,
        max_unauthenticated_per_address: int,
        max_authenticated_per_address: int,
        header_timeout: float,
        linger_timeout: float,
        max_linger_bytes: int,
        trusted_proxies: str = "127.0.0.1",
        ops_port: int | None = None,
    ) -> None:
        self.ops_port = ops_port
        self.max_connections = max_connections
        self.reserve = reserve
        self.max_unauthenticated = max_unauthenticated_per_address
        self.max_authenticated = max_authenticated_per_address
        self.header_timeout = header_timeout
        #: Bounds of a lingering close: seconds, and bytes read and dropped.
        self.linger_timeout = linger_timeout
        self.max_linger_bytes = max_linger_bytes
        self._trusted = _TrustedHosts(trusted_proxies)
        self.total = 0
        self.unauthenticated: Counter[str] = Counter()
        self.authenticated: Counter[str] = Counter()
        self._by_transport: dict[int, Tracked] = {}
        #: Refusals by reason (``total``, ``address``, ``address_authenticated``, ``reserve``,
        #: ``header_timeout``, ``body_timeout``), for metrics and tests.
        self.refused: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionGuard:
        """A guard with the limits of ``settings`` (capped by the open-file limit)."""
        limits = settings.limits
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        ceiling = soft - limits.connection_reserve - _FD_MARGIN
        max_connections = limits.max_connections
        if soft != resource.RLIM_INFINITY and ceiling < max_connections:
            max_connections = max(16, ceiling)
            log_event(
                "max_connections_lowered",
                logging.WARNING,
                configured=limits.max_connections,
                effective=max_connections,
                open_file_limit=soft,
            )
        return cls(
            max_connections=max_connections,
            reserve=limits.connection_reserve,
            max_unauthenticated_per_address=limits.max_unauthenticated_connections_per_address,
            max_authenticated_per_address=limits.max_authenticated_connections_per_address,
            header_timeout=limits.header_timeout_seconds,
            linger_timeout=limits.linger_timeout_seconds,
            max_linger_bytes=limits.max_linger_bytes,
            trusted_proxies=settings.forwarded_allow_ips,
            ops_port=settings.ops_port,
        )

    # -- TCP level ---------------------------------------------------------------------------

    def admit(self, transport: asyncio.BaseTransport) -> Tracked | None:
        """A new TCP connection: its tracking record, or None if it must be closed now."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.ops_port is not None:
            local = transport.get_extra_info("sockname")
            if isinstance(local, tuple) and len(local) > 1 and local[1] == self.ops_port:
                tracked = Tracked(address, False, operator=True, transport=transport, guard=self)
                self._by_transport[id(transport)] = tracked
                return tracked
        trusted = address in self._trusted
        if self.total >= self.max_connections + self.reserve:
            self.refused["total"] += 1
            return None
        if not trusted and self.unauthenticated[address] >= self.max_unauthenticated:
            self.refused["address"] += 1
            return None
        tracked = Tracked(address, trusted, reserve_only=self.total >= self.max_connections)
        tracked.transport = transport
        tracked.guard = self
        self.total += 1
        self.unauthenticated[address] += 1
        self._by_transport[id(transport)] = tracked
        return tracked

    def lookup(self, transport: asyncio.BaseTransport) -> Tracked | None:
        """The record of a connection admitted earlier (the WebSocket protocol takes it over)."""
        return self._by_transport.get(id(transport))

    def release(self, tracked: Tracked) -> None:
        """The connection is gone."""
        if tracked.closed:
            return
        tracked.closed = True
        if not tracked.operator:
            self.total -= 1
            counts = self.authenticated if tracked.authenticated else self.unauthenticated
            _decrement(counts, tracked.address)
        if tracked.transport is not None:
            self._by_transport.pop(id(tracked.transport), None)
            tracked.transport = None

    # -- ASGI level --------------------------------------------------------------------------

    def rekey(self, tracked: Tracked, address: str) -> bool:
        """Count a proxied connection under the client address its proxy names.

        Returns False (and leaves the count unchanged) if that address is at its cap of
        unauthenticated connections.
        """
        if tracked.closed or tracked.operator:
            return True
        if address == tracked.address or not tracked.trusted_peer:
            return True
        if tracked.authenticated:
            return True
        if self.unauthenticated[address] >= self.max_unauthenticated:
            self.refused["address"] += 1
            return False
        _decrement(self.unauthenticated, tracked.address)
        self.unauthenticated[address] += 1
        tracked.address = address
        return True

    def promote(self, tracked: Tracked) -> bool:
        """An authenticated WebSocket: count it as such, unless its address is at the cap."""
        if tracked.closed or tracked.authenticated or tracked.operator:
            return True
        if self.authenticated[tracked.address] >= self.max_authenticated:
            self.refused["address_authenticated"] += 1
            return False
        _decrement(self.unauthenticated, tracked.address)
        self.authenticated[tracked.address] += 1
        tracked.authenticated = True
        return True


class GuardCollector:
    """Prometheus view of a guard: ``vox_tcp_connections`` (gauge: open, by kind) and
    ``vox_connections_refused_total{reason}``."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[MetricFamily]:
        """Read the guard's counters at scrape time."""
        guard = self.guard
        open_ = GaugeMetricFamily(
            "vox_tcp_connections", "Open client connections by kind", labels=["kind"]
        )
        authenticated = sum(guard.authenticated.values())
        open_.add_metric(["authenticated"], authenticated)
        open_.add_metric(["unauthenticated"], guard.total - authenticated)
        yield open_
        refused = CounterMetricFamily(
            "vox_connections_refused",
            "Connections refused or closed by the guard, by reason",
            labels=["reason"],
        )
        reasons = ("total", "address", "address_authenticated", "reserve", "header_timeout")
        for reason in (*reasons, "body_timeout"):
            refused.add_metric([reason], guard.refused[reason])
        yield refused


def _decrement(counts: Counter[str], key: str) -> None:
    left = counts[key] - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class _LingeringClose:
    """The transport as a request's response cycle sees it: its ``close`` (uvicorn's, after a
    response that does not keep the connection alive) closes lingering when the request body
    is still arriving (:meth:`GuardedHttpProtocol.close_lingering`)."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        """Close, lingering if the client may still be sending the request body."""
        cycle = self._protocol.cycle
        if cycle is not None and cycle.more_body and self._transport.can_write_eof():
            self._protocol.close_lingering()
        else:
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with admission control, a request-head deadline and a
    lingering close."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.tracked: Tracked | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._upgraded = False
        #: Half-closed after a response, dropping what the client still sends.
        self.lingering = False
        self._linger_left = guard.max_linger_bytes
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection (unless :class:`_Gate` did) and start the head deadline."""
        super().connection_made(transport)
        if self.tracked is None:
            self.tracked = self.guard.admit(transport)
        if self.tracked is None:
            transport.abort()
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline; forget the connection (unless a WebSocket took it over)."""
        self._stop_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.tracked is not None and not self._upgraded:
            self.guard.release(self.tracked)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser (ignored once the connection was refused; dropped, up to a bound,
        while lingering)."""
        if self.tracked is None:
            return
        if self.lingering:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.transport.close()
            return
        super().data_received(data)

    def close_lingering(self) -> None:
        """Half-close after the response (the FIN follows what is buffered), then read and
        drop what the client still sends until it hangs up (its EOF closes the transport:
        uvicorn's ``eof_received`` does not keep it open), for at most the guard's
        ``linger_timeout`` seconds and ``max_linger_bytes``."""
        if self.lingering:
            return
        self.lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self.guard.linger_timeout, self.transport.close)

    def on_response_complete(self) -> None:
        """The response is sent: arm the keep-alive timer, unless the connection lingers (then
        only the linger bounds end it)."""
        if self.lingering:
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    def on_message_begin(self) -> None:
        """A request starts: its head must be complete before the deadline."""
        super().on_message_begin()
        self.scope["vox.connection"] = self.tracked  # type: ignore[typeddict-unknown-key]
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        """The head is complete: the deadline is met. Its response cycle closes lingering."""
        self._stop_head_timer()
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, _LingeringClose):
            self.cycle.transport = _LingeringClose(self.transport, self)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes over the transport (and its tracking record)."""
        self._stop_head_timer()
        self._upgraded = True
        super().handle_websocket_upgrade()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.guard.header_timeout, self._head_timeout)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.refused["header_timeout"] += 1
            self.transport.abort()


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol with the relay's documented close reason for 1009."""

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection; an oversized frame gets the reason ``frame too large``."""
        if code == 1009:
            reason = "frame too large"
        super().fail(code, reason)


#: What a frame handler (:meth:`GuardedWebSocketProtocol.hand_frames_to`) is given per message:
#: its text (``None`` for a binary message) and its size in bytes; it returns ``None`` when it
#: is done with the message, or an awaitable that finishes it (e.g. a rate-limit lease to refill).
FrameHandler = Callable[[str | None, int], Awaitable[None] | None]

_SERVER_PARSE = ServerProtocol.parse.__code__
_FRAMES_PARSE = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__


def _between_frames(conn: ServerProtocol) -> bool:
    """True if ``conn``'s parser has read every byte it was given and waits for the first
    byte of a new frame (not inside a frame, a fragmented message or the closing handshake):
    then bytes up to a frame boundary may be parsed elsewhere and the rest fed to it."""
    outer = conn.parser
    if getattr(outer, "gi_code", None) is not _SERVER_PARSE:
        return False
    frames = outer.gi_yieldfrom  # type: ignore[attr-defined]
    if getattr(frames, "gi_code", None) is not _FRAMES_PARSE:
        return False
    waiting = frames.gi_yieldfrom
    return (
        getattr(waiting, "gi_code", None) is _AT_EOF
        and not conn.reader.buffer
        and not conn.reader.eof
        and conn.current_size is None
        and conn.state is OPEN
    )


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol: small frames until authenticated, a clean 1009,
    and, once the app asks for it (:meth:`hand_frames_to`), messages handed to the app's
    handler as they arrive instead of through the ASGI receive queue."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.tracked: Tracked | None = None
        self.max_frame_bytes = config.ws_max_size
        self.conn = _ServerProtocol(
            extensions=[],
            max_size=min(PRE_AUTH_MAX_BYTES, config.ws_max_size),
            logger=logging.getLogger("uvicorn.error"),
        )
        self._lingering = False
        self._handler: FrameHandler | None = None
        #: Messages go through the queue while True (the app is finishing an earlier one).
        self._handler_paused = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take over the tracking record the HTTP protocol made for this transport."""
        super().connection_made(transport)
        self.tracked = self.guard.lookup(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._handler = None
        if self.tracked is not None:
            self.guard.release(self.tracked)
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        """Give the app the connection's tracking record (``scope["vox.connection"]``)."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["vox.connection"] = self.tracked

    def authenticated(self) -> None:
        """The app authenticated the device: frames up to ``max_frame_bytes`` from now on."""
        self.conn.max_message_size = self.max_frame_bytes

    # -- messages straight to the app --------------------------------------------------------
    #
    # Through ASGI every message costs a queue entry, a wake-up of the app's task, a pause and
    # a resume of reading, and websockets' generator-based frame parser. Once the app hands us
    # a handler, a message is given to it synchronously from ``data_received``, in order with
    # everything else:
    #
    # * while the handler is *paused* (set up, or finishing a message asynchronously) messages
    #   queue as before; the app's task works through the queue and calls
    #   :meth:`resume_handler` when the queue is empty;
    # * what the handler returns to be awaited, or raises, is queued (``vox.pending`` /
    #   ``vox.error``) for the app's task, and the handler pauses until then;
    # * unmasked, fragmented, control, non-text, oversized (``max_message_size``) and non-UTF-8
    #   frames, and anything while the connection is closing, go through websockets and uvicorn
    #   exactly as before (close codes included); simple text frames at a frame boundary are
    #   parsed here (:meth:`_simple_frames`).

    def hand_frames_to(self, handler: FrameHandler | None) -> None:
        """From now on give messages to ``handler`` (paused until :meth:`resume_handler`);
        ``None`` stops it."""
        self._handler = handler
        self._handler_paused = True

    def resume_handler(self) -> None:
        """The app's task has nothing queued left: messages go to the handler again."""
        if self.queue.empty():
            self._handler_paused = False

    def _give(self, text: str | None, size: int) -> None:
        handler = self._handler
        assert handler is not None
        try:
            pending = handler(text, size)
        except Exception as exc:  # the app's task raises it, as if it had read the message
            self._handler_paused = True
            self.queue.put_nowait({"type": "vox.error", "error": exc})  # type: ignore[arg-type]
            return
        if pending is not None:
            self._handler_paused = True
            self.queue.put_nowait({"type": "vox.pending", "pending": pending})  # type: ignore[arg-type]

    def send_receive_event_to_app(self) -> None:
        """A whole message (parsed by websockets): to the handler, or queued as before."""
        if self._handler is None or self._handler_paused or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:  # uvicorn's own answer (close 1007)
                super().send_receive_event_to_app()
                return
            self.frames = []
            self._give(text, len(data))
        else:
            self.frames = []
            self._give(None, len(data))

    def _simple_frames(self, data: bytes) -> bytes:
        """Give the handler every leading whole, masked, unfragmented text frame of ``data``;
        return the rest (from the first frame that is anything else, or incomplete)."""
        conn = self.conn
        if not _between_frames(conn):
            return data
        limit = conn.max_message_size
        pos = 0
        end = len(data)
        while end - pos >= 6 and not self._handler_paused and self._handler is not None:
            second = data[pos + 1]
            if data[pos] != 0x81 or second < 0x80:  # FIN + text, masked
                break
            length = second & 0x7F
            start = pos + 6
            if length == 126:
                start = pos + 8
                if end < start:
                    break
                length = data[pos + 2] << 8 | data[pos + 3]
            elif length == 127:
                break
            stop = start + length
            if stop > end or (limit is not None and length > limit) or self.close_sent:
                break
            payload = apply_mask(data[start:stop], data[start - 4 : start])
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                break
            pos = stop
            self._give(text, length)
        return data[pos:] if pos else data

    def data_received(self, data: bytes) -> None:
        """Feed the parser; after an oversized frame, drop what the peer still sends."""
        if self._lingering:
            return
        if self._handler is not None and not self._handler_paused:
            data = self._simple_frames(data)
            if not data:
                return
        super().data_received(data)

    def handle_parser_exception(self) -> None:
        """Send the close frame; for 1009, let the peer read it before the socket closes."""
        close = self.conn.close_sent
        if close is None or close.code != 1009:
            super().handle_parser_exception()
            return
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )
        output = self.conn.data_to_send()
        self.transport.write(b"".join(output))
        self.close_sent = True
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.close_timer = self.loop.call_later(self.guard.linger_timeout, self.transport.close)


class _Gate(asyncio.Protocol):
    """Admission before any HTTP machinery exists, so that refusing a connection of a flood
    costs a few microseconds; an admitted one is handed to a :class:`GuardedHttpProtocol`."""

    __slots__ = ("_args", "_guard")

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        self._args = (args, kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse (abort) or hand over to the HTTP protocol."""
        tracked = self._guard.admit(transport)
        if tracked is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        args, kwargs = self._args
        protocol = GuardedHttpProtocol(*args, guard=self._guard, **kwargs)
        protocol.tracked = tracked
        transport.set_protocol(protocol)
        protocol.connection_made(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        """A refused connection is gone (nothing to do)."""


def protocol_classes(guard: ConnectionGuard) -> tuple[Any, Any]:
    """The ``http`` and ``ws`` protocol factories for ``uvicorn.Config``."""
    return (
        partial(_Gate, guard=guard),
        partial(GuardedWebSocketProtocol, guard=guard),
    )


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard limit; log and return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log_event("open_file_limit_unchanged", logging.WARNING, error=str(exc))
    log_event("open_file_limit", logging.INFO, soft=soft, hard=hard)
    return soft


__all__ += ["protocol_classes"]
