"""The delivery service: connections, the group-commit writer, the TTL sweeper and the watchdog.

Lifecycle (from the app's lifespan): ``await service.start()`` → serve → ``await
service.going_away()`` (close every socket with 1001 after flushing what is queued, commit
and answer everything submitted) → ``await service.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.auth import repository as auth_repo
from server.clock import Clock
from server.delivery.budgets import DeviceBudgets
from server.delivery.connection import DeviceConnection
from server.delivery.fanout import Hub
from server.delivery.frames import (
    AckIn,
    ClientFrame,
    Delivery,
    FrameError,
    SendIn,
    as_dict,
    canonical_b64,
    decode_b64,
    dumps,
    error_frame,
)
from server.delivery.metrics import DeliveryMetrics
from server.delivery.policy import QueueLimits, QueuePolicy
from server.delivery.repository import DeliveryRepository
from server.delivery.writer import GroupCommitWriter, SendOp
from server.settings import LimitSettings
from wire.codes import CloseCode, ErrorCode
from wire.frames import AckFrame, PingFrame, SendFrame

__all__ = ["DeliveryConfig", "DeliveryService"]

log = logging.getLogger("vox.delivery")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Delivery bounds (most come from ``settings.limits``)."""

    max_frame_bytes: int = 2 * 1024 * 1024
    max_ciphertext_bytes: int = 256 * 1024
    max_recipients: int = 1000
    max_queue_depth: int = 10_000
    max_queue_bytes: int = 256 * 1024 * 1024
    queue_share_per_sender: float = 0.25
    envelope_ttl_seconds: int = 30 * 24 * 3600
    messages_per_second: float = 200.0
    #: Envelopes written to a socket and not yet acked.
    max_inflight: int = 500
    #: New deliveries pause while the outbound buffer holds more than this.
    out_soft_bytes: int = 512 * 1024
    #: A client whose outbound buffer grows past this is disconnected.
    max_out_bytes: int = 8 * 1024 * 1024
    #: A client whose socket accepts nothing for this long is disconnected.
    send_timeout: float = 15.0
    #: Sends submitted and not yet answered, per connection.
    max_pending_sends: int = 256
    auth_timeout: float = 10.0
    sweep_interval: float = 60.0
    #: How often the tokens of open sockets are re-checked (a revocation that no signal
    #: reported — e.g. ``vox-relay device revoke`` without Redis — closes them within this).
    token_check_interval: float = 30.0
    commit_max_batch: int = 256
    #: Concurrent group-commit writers (a device's operations always go to the same one).
    commit_writers: int = 1
    #: Batches each writer keeps in flight on PostgreSQL (one connection each; SQLite: 1).
    commit_pipeline: int = 3
    commit_max_wait: float = 0.002

    @classmethod
    def from_limits(cls, limits: LimitSettings, **overrides: object) -> DeliveryConfig:
        """Build from the relay's limit settings (plus explicit overrides)."""
        values: dict[str, object] = {
            "max_frame_bytes": limits.max_frame_bytes,
            "max_ciphertext_bytes": limits.max_ciphertext_bytes,
            "max_recipients": limits.max_recipients,
            "max_queue_depth": limits.max_queue_depth,
            "max_queue_bytes": limits.max_queue_bytes,
            "queue_share_per_sender": limits.queue_share_per_sender,
            "envelope_ttl_seconds": limits.envelope_ttl_seconds,
            "messages_per_second": limits.messages_per_second_per_device,
            "auth_timeout": limits.auth_timeout_seconds,
            "max_inflight": limits.max_inflight,
            "max_pending_sends": limits.max_pending_sends,
            "out_soft_bytes": limits.outbound_pause_bytes,
            "max_out_bytes": limits.max_outbound_bytes,
            "send_timeout": limits.send_timeout_seconds,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


class DeliveryService:
    """Owns the hub registrations, the writer and the background tasks of one node."""

    def __init__(
        self,
        engine: AsyncEngine,
        hub: Hub,
        metrics: DeliveryMetrics,
        config: DeliveryConfig,
        budgets: DeviceBudgets | None = None,
        *,
        clock: Clock,
        storage_low: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.clock = clock
        #: Per-device, per-account and per-address budgets (``server.delivery.budgets``).
        self.budgets = budgets or DeviceBudgets(LimitSettings(), clock)
        self.hub = hub
        self.metrics = metrics
        self.config = config
        self.repo = DeliveryRepository()
        # SQLite has one writer at a time anyway; on PostgreSQL one writer keeps several
        # batches in flight (``commit_pipeline``), which makes bigger batches than several
        # writers would. With more writers, a device's sends and acks still always go to the
        # same one (by device pk), so each connection's operations are answered in order.
        count = max(1, config.commit_writers)
        self.writers = [
            GroupCommitWriter(
                engine,
                hub,
                metrics,
                ttl_seconds=config.envelope_ttl_seconds,
                queue_policy=QueuePolicy(
                    QueueLimits(
                        max_depth=config.max_queue_depth,
                        max_bytes=config.max_queue_bytes,
                        sender_share=config.queue_share_per_sender,
                    )
                ),
                storage_low=storage_low,
                max_batch=config.commit_max_batch,
                max_wait=config.commit_max_wait,
                clock=clock,
                pipeline=config.commit_pipeline,
            )
            for _ in range(count)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.accepting = True
        #: With one writer, envelopes committed here arrive in seq order and a lower seq means
        #: "already delivered or committed elsewhere" (checked against the database). With
        #: several writers, commit order is the delivery order (each sender's envelopes still
        #: come in its order, since one writer handles all of a device's sends).
        self.strict_order_hints = len(self.writers) == 1

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer, the TTL sweeper and the slow-consumer watchdog."""
        for writer in self.writers:
            writer.start()
        self._tasks = [
            asyncio.create_task(self._sweeper(), name="vox-ttl-sweeper"),
            asyncio.create_task(self._watchdog(), name="vox-ws-watchdog"),
            asyncio.create_task(self._token_checker(), name="vox-ws-token-checker"),
        ]

    async def going_away(self, grace: float = 5.0) -> None:
        """Refuse new sends, commit and answer submitted ones, close sockets with 1001."""
        if not self.accepting and not self.hub.connection_count:
            return
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained(), timeout=grace)
        for sink in self.hub.local_sinks():
            if isinstance(sink, DeviceConnection):
                sink.close(CloseCode.GOING_AWAY, "server shutting down")
        deadline = self.clock.monotonic() + grace
        while self.hub.connection_count and self.clock.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop background tasks; the writer commits what it was given first."""
        self.accepting = False
        for writer in self.writers:
            await writer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def drained(self) -> None:
        """Every operation submitted so far is committed and answered."""
        for writer in self.writers:
            await writer.drained()

    def writer_for(self, device_pk: int) -> GroupCommitWriter:
        """The writer that handles this device's sends and acks."""
        return self.writers[device_pk % len(self.writers)]

    # -- reads -------------------------------------------------------------------------------

    async def fetch_queue(self, device_pk: int, limit: int) -> list[Delivery]:
        """The device's oldest ``limit`` queued envelopes."""
        self.metrics.queue_reads.inc()
        async with self.engine.connect() as conn:
            return await conn.run_sync(self.repo.fetch_queue, device_pk, limit, self.clock.now_ms())

    async def sweep(self, now: int | None = None) -> int:
        """Delete expired envelopes (``now`` in Unix ms); returns queue rows deleted."""
        t = self.clock.now_ms() if now is None else now
        async with self.engine.begin() as conn:
            expired = await conn.run_sync(self.repo.sweep, t)
            depth = await conn.run_sync(self.repo.queue_depth_total)
        self.metrics.expired.inc(expired)
        self.metrics.queue_depth.set(depth)
        return expired

    async def _sweeper(self) -> None:
        while True:
            try:
                expired = await self.sweep()
                if expired:
                    log.info("expired envelopes deleted", extra={"count": expired})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("TTL sweep failed: %s", exc.__class__.__name__)
            await asyncio.sleep(self.config.sweep_interval)

    async def _watchdog(self) -> None:
        interval = max(0.05, min(1.0, self.config.send_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.clock.monotonic()
            for sink in self.hub.local_sinks():
                if (
                    isinstance(sink, DeviceConnection)
                    and sink.blocked_for(now) > self.config.send_timeout
                ):
                    sink.abort("slow consumer: socket not writable")

    async def check_tokens(self) -> int:
        """Close (4401) every local socket whose token no longer authenticates; how many."""
        conns = [
            sink
            for sink in self.hub.local_sinks()
            if isinstance(sink, DeviceConnection) and sink.token_id is not None
        ]
        closed = 0
        for start in range(0, len(conns), 500):
            chunk = conns[start : start + 500]
            ids = [c.token_id for c in chunk if c.token_id is not None]
            async with AsyncSession(self.engine) as session:
                dead = await auth_repo.dead_tokens(session, ids, self.clock.now())
            for conn in chunk:
                reason = dead.get(conn.token_id) if conn.token_id is not None else None
                if reason is not None:
                    conn.close(CloseCode.UNAUTHORIZED, reason)
                    closed += 1
        return closed

    async def _token_checker(self) -> None:
        while True:
            await asyncio.sleep(self.config.token_check_interval)
            try:
                await self.check_tokens()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("token check failed: %s", exc.__class__.__name__)

    # -- frames ------------------------------------------------------------------------------

    def handle_frame(self, conn: DeviceConnection, frame: SendIn | AckIn | ClientFrame) -> None:
        """Process one parsed client frame after authentication (raises ``FrameError`` for
        the caller to answer): ``send`` and ``ack`` as :func:`~server.delivery.frames.parse_frame`
        gives them (dicts) or as models. Budgets were charged by the caller (``routes``)."""
        if isinstance(frame, dict):
            if frame["type"] == "send":
                self._handle_send(conn, frame)
            else:
                conn.ack(frame["seqs"])
        elif isinstance(frame, SendFrame):
            self._handle_send(conn, as_dict(frame))
        elif isinstance(frame, AckFrame):
            conn.ack(frame.seqs)
        elif isinstance(frame, PingFrame):
            conn.push_frame(dumps({"type": "pong", "id": frame.id}))
        else:
            raise FrameError(ErrorCode.BAD_FRAME, "already authenticated", None)

    def _handle_send(self, conn: DeviceConnection, frame: SendIn) -> None:
        cfg = self.config
        frame_id = frame["id"]
        recipients = 0
        for p in frame["payloads"]:
            recipients += len(p["to"])
        if recipients > cfg.max_recipients:
            raise FrameError(
                ErrorCode.TOO_MANY_RECIPIENTS,
                f"at most {cfg.max_recipients} recipient devices",
                frame_id,
            )
        seen: set[tuple[str, int]] = set()
        payloads: list[tuple[bytes, list[tuple[str, int]]]] = []
        texts: list[str] = []
        for payload in frame["payloads"]:
            data = decode_b64(payload["data"], frame_id)
            if len(data) > cfg.max_ciphertext_bytes:
                raise FrameError(
                    ErrorCode.TOO_LARGE,
                    f"a payload is over {cfg.max_ciphertext_bytes} bytes",
                    frame_id,
                )
            to = []
            for r in payload["to"]:
                key = (r["user"], r["device"])
                if key in seen:
                    raise FrameError(
                        ErrorCode.DUPLICATE_RECIPIENT,
                        "a device is addressed more than once",
                        frame_id,
                    )
                seen.add(key)
                to.append(key)
            payloads.append((data, to))
            texts.append(canonical_b64(payload["data"], data))
        if (conn.device.user, conn.device.device_id) in seen:
            raise FrameError(ErrorCode.BAD_RECIPIENT, "a device cannot send to itself", frame_id)
        if not self.accepting:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "the relay is shutting down; retry", frame_id)
        if conn.pending_sends >= cfg.max_pending_sends:
            raise FrameError(ErrorCode.BUSY, "too many sends awaiting an answer", frame_id)
        conn.pending_sends += 1
        op = SendOp(
            conn,
            conn.device,
            frame_id,
            payloads,
            frame["ephemeral"],
            frame["ttl"],
            self.clock.monotonic(),
            after=frame["after"],
            texts=texts,
        )
        self.writer_for(conn.device.device_pk).submit(op)

    @staticmethod
    def frame_error(exc: FrameError) -> str:
        """The error frame answering a recoverable frame error."""
        return error_frame(exc.code, exc.message, exc.frame_id)
