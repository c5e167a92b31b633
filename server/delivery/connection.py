"""One authenticated device's live WebSocket: its outbound buffer and its delivery window.

State kept per connection is small and bounded:

* ``_out`` — frames waiting to be written, bounded by ``max_out_bytes``; a sender task exists
  only while there is something to write (an idle connection owns no extra task).
* ``_inflight`` — ``seq`` → "ack pending" for envelopes written to this socket and not yet
  deleted; at most ``max_inflight``. New deliveries pause when it is full or when the outbound
  buffer holds more than ``out_soft_bytes``, and resume from the database when room returns.

Deliveries come from two places, kept in ``seq`` order:

* ``push_committed`` — envelopes just committed for the device, by this node or (carried by
  Redis with the wake-up) by another: written directly while the connection is caught up (no
  database read);
* ``wake`` — the queue changed (another node, redelivery, backlog): a reader task reads the
  device's oldest queued rows, skipping those already in flight.

A client that stops reading is disconnected: its outbound buffer overflows, or a write stays
blocked longer than ``send_timeout`` (checked by the service's watchdog); its transport is then
aborted so it cannot hold memory or slow anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN

from server.delivery.frames import Delivery, error_frame
from server.delivery.writer import AckOp, Sender
from wire.codes import CloseCode, ErrorCode

if TYPE_CHECKING:
    from server.delivery.service import DeliveryService

__all__ = ["DeviceConnection", "sansio_protocol_of"]

log = logging.getLogger("vox.delivery")


#: Queue rows read per database round trip.
_READ_PAGE = 100


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class DeviceConnection:
    """The relay side of one device's WebSocket (implements
    ``server.delivery.fanout.DeviceSink``)."""

    __slots__ = (
        "_acked_during_read",
        "_backlog",
        "_blocked_since",
        "_flush_scheduled",
        "_inflight",
        "_loop",
        "_max_seq",
        "_out",
        "_out_bytes",
        "_proto",
        "_read_again",
        "_reader",
        "_sender",
        "_service",
        "_unflushed",
        "_ws",
        "closing",
        "connection_id",
        "device",
        "pending_sends",
        "token_id",
    )

    def __init__(
        self,
        ws: WebSocket,
        device: Sender,
        service: DeliveryService,
        *,
        token_id: int | None = None,
    ) -> None:
        self.connection_id = secrets.token_hex(8)
        #: The bearer token this connection authenticated with (logout closes it).
        self.token_id = token_id
        self.device = device
        self._ws = ws
        self._service = service
        self._out: deque[str | _Close] = deque()
        self._out_bytes = 0
        self._proto = sansio_protocol_of(ws)
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._unflushed = 0
        self._sender: asyncio.Task[None] | None = None
        self._blocked_since: float | None = None
        self._reader: asyncio.Task[None] | None = None
        self._read_again = False
        self._backlog = False
        self._inflight: dict[int, bool] = {}
        self._acked_during_read: list[int] | None = None
        self._max_seq = 0
        self.pending_sends = 0
        self.closing = False

    # -- outbound ----------------------------------------------------------------------------

    def push_frame(self, text: str) -> None:
        """Send or queue a frame; a client that lets the buffer overflow is disconnected."""
        if self.closing:
            return
        proto = self._proto
        if proto is not None and not self._out and proto.writable.is_set():
            # Fast path: nothing queued and the socket accepts data. Encode the frame now and
            # write everything encoded during this loop iteration with one transport write.
            if not (proto.close_sent or proto.disconnected):
                _append_text_frame(proto.conn, text)
                self._encoded(len(text))
            return
        self._flush()  # whatever the fast path encoded goes first
        self._out.append(text)
        self._out_bytes += len(text)
        if self._out_bytes > self._service.config.max_out_bytes:
            self.abort("slow consumer: outbound buffer full")
            return
        self._ensure_sender()

    def sends_answered(self, answers: list[str]) -> None:
        """Answers to ``len(answers)`` of this connection's sends, in their order (one call
        per writer batch: the frames are encoded together and leave in one transport write
        with everything else encoded for this socket in this loop iteration)."""
        self.pending_sends -= len(answers)
        if self.closing:
            return
        proto = self._proto
        if (
            proto is None
            or self._out
            or not proto.writable.is_set()
            or proto.close_sent
            or proto.disconnected
        ):
            for text in answers:  # the slow path, frame by frame (or dropped once closed)
                self.push_frame(text)
            return
        conn = proto.conn
        size = 0
        for text in answers:
            _append_text_frame(conn, text)
            size += len(text)
        self._encoded(size)

    def _encoded(self, size: int) -> None:
        """``size`` characters were encoded into the protocol's output: write them at the end
        of this loop iteration, or now once that output reaches ``out_soft_bytes``."""
        self._unflushed += size
        if self._unflushed >= self._service.config.out_soft_bytes:
            self._flush()  # bounded: the transport then pauses us if it must
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        proto = self._proto
        if proto is None:
            return
        data = proto.conn.data_to_send()
        if data and not proto.transport.is_closing():
            proto.transport.write(b"".join(data))

    def close(self, code: int, reason: str) -> None:
        """Write what is queued, then close with ``code``/``reason``."""
        if self.closing:
            return
        self.closing = True
        self._service.metrics.disconnects.labels(str(code)).inc()
        self._out.append(_Close(code, reason))
        self._ensure_sender()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (its peer is not reading)."""
        log.info("aborting connection: %s", reason, extra={"device_pk": self.device.device_pk})
        self.closing = True
        self._service.metrics.disconnects.labels(str(CloseCode.SLOW_CONSUMER)).inc()
        self._out.clear()
        self._out_bytes = 0
        transport = _transport_of(self._ws)
        if transport is not None:
            transport.abort()
        else:  # not uvicorn: best effort
            self._out.append(_Close(CloseCode.SLOW_CONSUMER, reason))
            self._ensure_sender()

    def blocked_for(self, now: float) -> float:
        """How long the current write has been waiting for the peer (0 if none)."""
        return 0.0 if self._blocked_since is None else now - self._blocked_since

    def _ensure_sender(self) -> None:
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        ws_send = self._ws.send
        try:
            while self._out:
                item = self._out.popleft()
                self._blocked_since = self._service.clock.monotonic()
                if isinstance(item, _Close):
                    await ws_send(
                        {"type": "websocket.close", "code": item.code, "reason": item.reason}
                    )
                    self._out.clear()
                    return
                self._out_bytes -= len(item)
                await ws_send({"type": "websocket.send", "text": item})
                self._blocked_since = None
                if self._backlog and self._out_bytes < self._service.config.out_soft_bytes:
                    self.wake()
        except Exception:  # peer gone: the receive loop sees the disconnect
            self.closing = True
            self._out.clear()
        finally:
            self._blocked_since = None
            self._sender = None

    # -- hub interface -----------------------------------------------------------------------

    def replaced(self) -> None:
        """A newer connection of this device took over."""
        self.close(CloseCode.REPLACED, "replaced by a newer connection of this device")

    def revoked(self, reason: str) -> None:
        """The device was removed or revoked."""
        self.close(CloseCode.UNAUTHORIZED, reason[:100] or "device revoked")

    def _room(self) -> int:
        if self.closing or self._out_bytes >= self._service.config.out_soft_bytes:
            return 0
        return self._service.config.max_inflight - len(self._inflight)

    def _deliver(self, delivery: Delivery) -> None:
        self._inflight[delivery.seq] = False
        if delivery.seq > self._max_seq:
            self._max_seq = delivery.seq
        self.push_frame(delivery.text)

    def push_committed(self, envelopes: Sequence[Any], *, remote: bool = False) -> None:
        """Envelopes committed for this device (ascending ``seq``): by this node, or by
        another (``remote``, carried by Redis, possibly late: a ``seq`` not above every one
        this connection has seen is left to the database)."""
        if self.closing:
            return
        if self._reader is not None or self._backlog:
            self.wake()
            return
        delivered = 0
        for delivery in envelopes:
            assert isinstance(delivery, Delivery)
            if delivery.seq in self._inflight:
                continue
            if delivery.seq <= self._max_seq and (remote or self._service.strict_order_hints):
                # Committed out of seq order (another writer or node): let the database decide.
                self.wake()
                break
            if self._room() <= 0:
                self._backlog = True
                break
            self._deliver(delivery)
            delivered += 1
        self._service.metrics.deliveries.inc(delivered)

    def wake(self) -> None:
        """Read the device's queue from the database (coalesces while a read runs)."""
        if self.closing:
            return
        if self._reader is not None:
            self._read_again = True
            return
        self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while not self.closing:
                self._read_again = False
                room = min(self._room(), _READ_PAGE)
                if room <= 0:
                    self._backlog = True
                    return
                limit = len(self._inflight) + room
                rows = await self._service.fetch_queue(self.device.device_pk, limit)
                fresh = [d for d in rows if d.seq not in self._inflight]
                sent = 0
                for delivery in fresh:
                    if self._room() <= 0:
                        break
                    self._deliver(delivery)
                    sent += 1
                self._service.metrics.deliveries.inc(sent)
                more = len(rows) >= limit or sent < len(fresh)
                self._backlog = more
                self._forget_acked()
                if more and self._room() > 0:
                    continue
                if not self._read_again:
                    return
        except Exception as exc:
            log.warning("queue read failed: %s", exc.__class__.__name__)
            self._backlog = True
        finally:
            self._reader = None
            self._forget_acked()

    # -- inbound -----------------------------------------------------------------------------

    def ack(self, seqs: list[int]) -> None:
        """Acks from the client: only envelopes delivered on this connection count."""
        inflight = self._inflight
        unknown = []
        fresh = []
        for seq in seqs:  # one pass: False = delivered, True = ack already on its way
            state = inflight.get(seq)
            if state is None:
                unknown.append(seq)
            elif state is False:
                inflight[seq] = True
                fresh.append(seq)
        if fresh:
            self._service.writer_for(self.device.device_pk).submit(
                AckOp(self, self.device.device_pk, fresh)
            )
        if unknown:
            self.push_frame(
                error_frame(
                    ErrorCode.ACK_UNKNOWN,
                    "these seqs were not delivered on this connection; ignored",
                    None,
                    seqs=unknown[:100],
                )
            )

    def acks_committed(self, seqs: list[int], ok: bool) -> None:
        """Called by the writer after the ack transaction."""
        for seq in seqs:
            if not ok:
                if seq in self._inflight:
                    self._inflight[seq] = False
            elif self._reader is not None:
                # A queue read may have started before this delete was committed and may still
                # return these rows: keep them marked in flight until that read is done.
                if self._acked_during_read is None:
                    self._acked_during_read = []
                self._acked_during_read.append(seq)
            else:
                self._inflight.pop(seq, None)
        if self._backlog:
            self.wake()

    def _forget_acked(self) -> None:
        if self._acked_during_read:
            for seq in self._acked_during_read:
                self._inflight.pop(seq, None)
        self._acked_during_read = None

    def shutdown(self) -> None:
        """Detach from background work (called when the socket is gone)."""
        self.closing = True
        for task in (self._reader, self._sender):
            if task is not None:
                task.cancel()
        self._out.clear()


def sansio_protocol_of(ws: WebSocket) -> Any:
    """uvicorn's sans-I/O WebSocket protocol object behind ``ws``, if that is what serves it.

    Writing a frame through the ASGI ``send`` chain costs several awaits and wrappers per
    frame; with this object a frame is encoded and handed to the transport synchronously
    (only when the transport is writable and nothing is queued, so ordering and back-pressure
    are unchanged). Any other server falls back to the ASGI path.
    """
    receive = getattr(ws, "_receive", None)
    protocol = getattr(receive, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    if not all(hasattr(protocol, a) for a in ("conn", "transport", "writable", "close_sent")):
        return None
    conn = protocol.conn
    if not isinstance(getattr(conn, "writes", None), list) or not all(
        hasattr(conn, a) for a in ("extensions", "debug", "expect_continuation_frame", "state")
    ):
        return None
    return protocol


_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def _append_text_frame(conn: Any, text: str) -> None:
    """Append one unfragmented text frame carrying ``text`` to the websockets protocol's
    output (``conn.data_to_send()`` returns it, in order with everything else it wrote).

    The same bytes as ``conn.send_text(text.encode())`` (a server frame: FIN, opcode 1, no
    mask) without the ``Frame`` object and its serialisation (a fifth of the cost); whenever
    that method would do anything else (an extension such as compression, debug logging, a
    fragmented message or a state other than OPEN) it is called instead.
    """
    if conn.extensions or conn.debug or conn.expect_continuation_frame or conn.state is not OPEN:
        conn.send_text(text.encode())
        return
    data = text.encode()
    size = len(data)
    writes = conn.writes
    if size < 126:
        writes.append(bytes((0x81, size)))
    elif size < 65536:
        writes.append(_HEAD16(0x81, 126, size))
    else:
        writes.append(_HEAD64(0x81, 127, size))
    writes.append(data)


def _transport_of(ws: WebSocket) -> asyncio.Transport | None:
    """The uvicorn protocol's transport behind a Starlette WebSocket, if reachable."""
    receive = getattr(ws, "_receive", None)
    protocol = getattr(receive, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if isinstance(transport, asyncio.Transport):
        return transport
    with contextlib.suppress(Exception):
        if transport is not None and hasattr(transport, "abort"):
            return transport  # type: ignore[no-any-return]
    return None
