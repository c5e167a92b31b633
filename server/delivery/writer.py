"""The group-commit writer: many connections' sends and acks, one transaction, then answers.

Connections never touch the database for writes. They hand :class:`SendOp` and
:class:`AckOp` objects to :meth:`GroupCommitWriter.submit` and keep reading frames. A single
task takes everything queued (up to ``max_batch`` operations, waiting at most ``max_wait``
seconds for more once a batch has begun), validates and stores it in **one** transaction,
commits, and only then answers: ``accepted`` to each sender, deliveries to the recipients'
sockets (through the hub), ack completion to the ackers. Nothing is answered ``accepted``
before its commit; if the transaction fails, every send in it is answered with an error and
nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.clock import Clock
from server.db.engine import IMMEDIATE, configure_sqlite
from server.delivery.fanout import Hub
from server.delivery.frames import Delivery, dumps, error_frame
from server.delivery.metrics import DeliveryMetrics
from server.delivery.policy import (
    QUEUE_FULL,
    QUEUE_SHARE_FULL,
    Mismatch,
    QueuePolicy,
    QueueUsage,
    UnknownUsers,
    resolve_recipients,
)
from server.delivery.repository import DeliveryRepository, DeviceSets, NewSend
from wire.codes import ErrorCode
from wire.encoding import b64

__all__ = ["AckOp", "GroupCommitWriter", "SendOp", "Sender"]

log = logging.getLogger("vox.delivery")


class Origin(Protocol):
    """The connection an operation came from (answers go back to it)."""

    def push_frame(self, text: str) -> None:
        """Queue a frame to the client."""

    def send_finished(self) -> None:
        """One of its sends was answered (accepted or refused)."""

    def acks_committed(self, seqs: list[int], ok: bool) -> None:
        """Its acks were committed (``ok``) or failed."""


@dataclass(slots=True, frozen=True)
class Sender:
    """The authenticated sending device."""

    device_pk: int
    user: str
    device_id: int


@dataclass(slots=True)
class SendOp:
    """A decoded, size-checked ``send`` waiting for validation and storage."""

    origin: Origin
    sender: Sender
    client_id: str
    #: (ciphertext, [(user, device id), ...]) per payload.
    payloads: list[tuple[bytes, list[tuple[str, int]]]]
    ephemeral: bool
    #: The send's ``ttl`` (seconds): caps the stored envelope's lifetime.
    ttl_seconds: int | None
    #: ``clock.monotonic()`` when the frame arrived (send latency).
    started: float
    answer: str | None = None
    accepted: bool = False


@dataclass(slots=True)
class AckOp:
    """Acks of one connection: delete (device pk, seq) rows."""

    origin: Origin
    device_pk: int
    seqs: list[int]


Op = SendOp | AckOp


def sqlite_sync_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file, with the relay's connection pragmas.

    The writer runs each batch's transaction in its own thread through it: with aiosqlite
    every statement, fetch and cursor close is a separate hand-off to the driver's thread.
    """
    from sqlalchemy import create_engine

    url = engine.url.set(drivername="sqlite")
    sync = create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )

    configure_sqlite(sync)

    return sync


class GroupCommitWriter:
    """Batches sends and acks from every connection into single transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        hub: Hub,
        metrics: DeliveryMetrics,
        *,
        ttl_seconds: int,
        queue_policy: QueuePolicy,
        storage_low: Callable[[], bool] = lambda: False,
        max_batch: int = 256,
        max_wait: float = 0.002,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._sqlite_engine = (
            sqlite_sync_engine(engine) if engine.dialect.name == "sqlite" else None
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vox-writer")
        self._conn: AsyncConnection | None = None
        self._hub = hub
        self._metrics = metrics
        self._repo = DeliveryRepository()
        self._ttl_ms = ttl_seconds * 1000
        self._policy = queue_policy
        #: True while free disk space is below the watermark: durable sends are refused.
        self._storage_low = storage_low
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._clock = clock
        self._queue: asyncio.Queue[Op] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Ephemeral sends validated in the current transaction, pushed after it.
        self._pending_live: list[tuple[SendOp, list[list[int]], int]] = []

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="vox-group-commit")

    async def stop(self) -> None:
        """Commit and answer everything already submitted, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained(), timeout=10)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._sqlite_engine is not None:
            self._sqlite_engine.dispose()

    async def drained(self) -> None:
        """Wait until every submitted operation has been committed and answered."""
        await self._idle.wait()

    def submit(self, op: Op) -> None:
        """Queue an operation for the next batch."""
        self._outstanding += 1
        self._idle.clear()
        self._queue.put_nowait(op)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_batch:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # Let other connections' frames arrive and join this commit.
                    await asyncio.sleep(min(remaining, 0.0005))
                    continue
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except Exception as exc:  # never let the writer die (and never log parameters)
                log.error("group commit failed unexpectedly: %s", exc.__class__.__name__)
            finally:
                self._outstanding -= len(batch)
                if self._outstanding == 0:
                    self._idle.set()

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, batch: list[Op]) -> None:
        self._metrics.batch_size.observe(len(batch))
        try:
            started = self._clock.monotonic()
            per_device = await self._transaction(batch)
            self._metrics.commit_seconds.observe(self._clock.monotonic() - started)
        except IntegrityError:
            # A concurrent node stored the same (sender, client id): redo one by one, so the
            # de-duplication check sees the other row.
            for op in batch:
                try:
                    per_device = await self._transaction([op])
                except Exception as exc:
                    self._fail([op], exc)
                else:
                    self._answer([op], per_device)
            return
        except Exception as exc:
            self._fail(batch, exc)
            return
        self._answer(batch, per_device)

    async def _transaction(self, batch: list[Op]) -> dict[int, list[Delivery]]:
        self._pending_live = []
        for op in batch:
            if isinstance(op, SendOp):
                op.answer, op.accepted = None, False
        if self._sqlite_engine is not None:
            # The whole transaction in the writer's own thread: one hand-off per batch.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._sqlite_transaction, batch)
        # PostgreSQL: the writer keeps one connection (no pool checkout and ping per batch).
        if self._conn is None:
            self._conn = await self._engine.connect()
        try:
            async with self._conn.begin():
                return await self._conn.run_sync(self._apply, batch)
        except BaseException:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    def _sqlite_transaction(self, batch: list[Op]) -> dict[int, list[Delivery]]:
        assert self._sqlite_engine is not None
        with self._sqlite_engine.connect() as conn:
            # Take SQLite's write lock at BEGIN: this transaction reads, then writes.
            conn = conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                return self._apply(conn, batch)

    def _apply(self, conn: Connection, batch: list[Op]) -> dict[int, list[Delivery]]:
        acks = [(op.device_pk, seq) for op in batch if isinstance(op, AckOp) for seq in op.seqs]
        if acks:
            self._metrics.acks.inc(self._repo.delete_acked(conn, acks))
        sends = [op for op in batch if isinstance(op, SendOp)]
        return self._store(conn, sends) if sends else {}

    def _store(self, conn: Connection, ops: list[SendOp]) -> dict[int, list[Delivery]]:
        now = self._clock.now_ms()
        durable = [op for op in ops if not op.ephemeral]
        storage_low = bool(durable) and self._storage_low()
        # 1. De-duplication: already stored earlier, or twice in this batch.
        found = self._repo.find_sends(conn, [(op.sender.device_pk, op.client_id) for op in durable])
        first_in_batch: dict[tuple[int, str], SendOp] = {}
        fresh: list[SendOp] = []
        duplicates: list[tuple[SendOp, SendOp]] = []
        for op in ops:
            if op.ephemeral:
                fresh.append(op)
                continue
            key = (op.sender.device_pk, op.client_id)
            if key in found:
                record = found[key]
                op.answer = _accepted(op.client_id, record.envelope_id, record.ts)
                op.accepted = True
            elif key in first_in_batch:
                duplicates.append((op, first_in_batch[key]))
            elif storage_low:
                # Below the free-disk watermark: refuse before the database runs out of space.
                op.answer = error_frame(
                    ErrorCode.INSUFFICIENT_STORAGE,
                    "the relay is low on storage; nothing was stored; retry later",
                    op.client_id,
                )
                self._metrics.sends_refused.labels("insufficient_storage").inc()
            else:
                first_in_batch[key] = op
                fresh.append(op)
        # 2. Device sets of every user named and of every sender.
        users = {op.sender.user for op in fresh}
        users.update(user for op in fresh for _, to in op.payloads for user, _ in to)
        sets = self._repo.device_sets(conn, users)
        resolved: list[tuple[SendOp, list[list[int]]]] = []
        for op in fresh:
            pks = self._check_recipients(op, sets.devices)
            if pks is not None:
                resolved.append((op, pks))
        # 3. Queue limits (counting this batch's earlier sends too). The targets' queues
        # are locked first (PostgreSQL: until the commit), so that no other writer, here or
        # on another node, counts and fills the same queue at the same time.
        targets = {pk for op, pks in resolved if not op.ephemeral for group in pks for pk in group}
        if targets:
            self._repo.lock_queues(conn, targets)
        usage = self._repo.queue_usage(conn, targets) if targets else {}
        owners = _owners(sets)
        to_store: list[NewSend] = []
        live: list[tuple[SendOp, list[list[int]]]] = []
        ids = os.urandom(16 * len(resolved)).hex()  # envelope ids: 128 random bits each
        for n, (op, pks) in enumerate(resolved):
            if op.ephemeral:
                live.append((op, pks))
                continue
            sender = sets.accounts[op.sender.user]
            if self._refuse_over_quota(op, pks, usage, owners, sender):
                continue
            for (data, _), group in zip(op.payloads, pks, strict=True):
                for pk in group:
                    usage[pk].add(sender, len(data))
            envelope_id = ids[32 * n : 32 * n + 32]
            to_store.append(
                NewSend(
                    envelope_id=envelope_id,
                    sender_device_pk=op.sender.device_pk,
                    sender_account_id=sender,
                    sender_user=op.sender.user,
                    sender_device_id=op.sender.device_id,
                    client_id=op.client_id,
                    ts=now,
                    expires_at=now + _lifetime_ms(self._ttl_ms, op.ttl_seconds),
                    payloads=[
                        (data, group) for (data, _), group in zip(op.payloads, pks, strict=True)
                    ],
                )
            )
            op.answer = _accepted(op.client_id, envelope_id, now)
            op.accepted = True
        per_device = self._repo.insert_sends(conn, to_store)
        for op, dup_of in duplicates:
            op.answer, op.accepted = dup_of.answer, dup_of.accepted
        # 4. Ephemeral sends: answered and pushed after the commit, never stored.
        for op, pks in live:
            ephemeral_answer = dumps(
                {
                    "type": "accepted",
                    "id": op.client_id,
                    "envelope": None,
                    "ts": now,
                    "ephemeral": True,
                }
            )
            op.answer, op.accepted = ephemeral_answer, True
            self._pending_live.append((op, pks, now))
        return per_device

    def _refuse_over_quota(
        self,
        op: SendOp,
        pks: list[list[int]],
        usage: dict[int, QueueUsage],
        owners: dict[int, int],
        sender: int,
    ) -> bool:
        """Set the refusal answer if a payload does not fit its devices' queues (the queue
        policy: depth, bytes, the sender's share); nothing of the send is stored then."""
        refused: dict[str, list[int]] = {}
        # Devices are distinct within a send, so each appears once in ``pks``.
        for (data, _), group in zip(op.payloads, pks, strict=True):
            for pk in group:
                code = self._policy.refusal(
                    usage[pk], sender=sender, owner=owners[pk], size=len(data)
                )
                if code is not None:
                    refused.setdefault(code, []).append(pk)
        if not refused:
            return False
        code = QUEUE_FULL if QUEUE_FULL in refused else QUEUE_SHARE_FULL
        names = {pk: ref for ref, pk in _refs(op, pks)}
        message = (
            "a recipient device's queue is full; nothing was stored"
            if code == QUEUE_FULL
            else "you have filled your share of a recipient device's queue; nothing was stored"
        )
        op.answer = error_frame(
            code, message, op.client_id, devices=[names[pk] for pk in refused[code]]
        )
        self._metrics.sends_refused.labels(code).inc()
        return True

    def _check_recipients(
        self, op: SendOp, device_sets: dict[str, dict[int, int]]
    ) -> list[list[int]] | None:
        """Map every payload's recipients to device pks, or set the refusal answer."""
        result = resolve_recipients(
            [to for _, to in op.payloads],
            op.sender.user,
            op.sender.device_id,
            device_sets,
            durable=not op.ephemeral,
        )
        if isinstance(result, UnknownUsers):
            op.answer = error_frame(
                ErrorCode.UNKNOWN_USER, "no such user", op.client_id, users=result.users
            )
            self._metrics.sends_refused.labels("unknown_user").inc()
            return None
        if isinstance(result, Mismatch):
            op.answer = dumps(
                {
                    "type": "mismatch",
                    "id": op.client_id,
                    "missing": result.missing,
                    "stale": result.stale,
                }
            )
            self._metrics.sends_refused.labels("mismatch").inc()
            return None
        return result

    def _answer(self, batch: list[Op], per_device: dict[int, list[Delivery]]) -> None:
        accepted = 0
        now = self._clock.monotonic()
        observe = self._metrics.send_latency.observe
        for op in batch:
            if isinstance(op, SendOp):
                if op.answer is None:  # pragma: no cover - every path sets an answer
                    op.answer = error_frame(
                        ErrorCode.INTERNAL, "send was not processed", op.client_id
                    )
                if op.accepted and not op.ephemeral:
                    accepted += 1
                    observe(now - op.started)
                op.origin.push_frame(op.answer)
                op.origin.send_finished()
            else:
                op.origin.acks_committed(op.seqs, True)
        if accepted:
            self._metrics.sends_accepted.inc(accepted)
        if per_device:
            self._metrics.envelopes_queued.inc(sum(len(v) for v in per_device.values()))
            self._hub.committed(per_device)
        live, self._pending_live = self._pending_live, []
        for op, pks, ts in live:
            self._metrics.ephemeral_sent.inc()
            for (data, _), group in zip(op.payloads, pks, strict=True):
                text = dumps(
                    {
                        "type": "ephemeral",
                        "from": {"user": op.sender.user, "device": op.sender.device_id},
                        "ts": ts,
                        "data": b64(data),
                    }
                )
                self._hub.send_frame(group, text)

    def _fail(self, batch: list[Op], exc: BaseException) -> None:
        log.error("delivery transaction failed: %s", exc.__class__.__name__)
        self._pending_live = []
        for op in batch:
            if isinstance(op, SendOp):
                self._metrics.sends_refused.labels("internal").inc()
                op.origin.push_frame(
                    error_frame(ErrorCode.INTERNAL, "temporary server error; retry", op.client_id)
                )
                op.origin.send_finished()
            else:
                op.origin.acks_committed(op.seqs, False)


def _accepted(client_id: str, envelope_id: str, ts: int) -> str:
    return f'{{"type":"accepted","id":"{client_id}","envelope":"{envelope_id}","ts":{ts}}}'


def _owners(sets: DeviceSets) -> dict[int, int]:
    """device pk → its account id."""
    return {
        pk: sets.accounts[user] for user, devices in sets.devices.items() for pk in devices.values()
    }


def _lifetime_ms(default_ms: int, ttl_seconds: int | None) -> int:
    """The relay's envelope lifetime, capped at the send's own ``ttl``."""
    return default_ms if ttl_seconds is None else min(default_ms, ttl_seconds * 1000)


def _refs(op: SendOp, pks: list[list[int]]) -> list[tuple[dict[str, object], int]]:
    return [
        ({"user": user, "device": device_id}, pk)
        for (_, to), group in zip(op.payloads, pks, strict=True)
        for (user, device_id), pk in zip(to, group, strict=True)
    ]
