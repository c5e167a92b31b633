"""The group-commit writer: many connections' sends and acks, one transaction, then answers.

Connections never touch the database for writes. They hand :class:`SendOp` and
:class:`AckOp` objects to :meth:`GroupCommitWriter.submit` and keep reading frames. A single
task takes everything queued (up to ``max_batch`` operations, waiting at most ``max_wait``
seconds for more once a batch has begun), validates and stores it in **one** transaction,
commits, and only then answers: ``accepted`` to each sender, deliveries to the recipients'
sockets (through the hub), ack completion to the ackers. Nothing is answered ``accepted``
before its commit; if the transaction fails, every send in it is answered with an error and
nothing of it is stored.

On PostgreSQL a writer keeps up to ``pipeline`` batches in flight, each in its own
transaction on its own connection, so that the next batch's statements run while the
previous one waits for its commit (commit latency, not CPU, bounds a single writer there).
One batch runs its statements at a time: the next one is formed once the previous one has
sent its ``COMMIT`` (it gathers every operation that arrived until then; formed earlier, it
would wait for the previous batch's queue locks anyway whenever they share a recipient). Its
connections are opened when the writer starts. Order is kept:

* answers (``accepted``, deliveries, ack completions) go out in batch order — a batch that
  commits early waits for the batches before it to be answered;
* a recipient's queue rows are numbered in batch order: every batch takes the recipients'
  queue locks before counting and inserting, and holds them until it commits, so a later
  batch's rows for the same device are inserted (and numbered) after the earlier batch
  committed;
* a send repeated while its first copy is still in flight (the same sender and client id)
  is answered with the first copy's answer, once that one is answered;
* a send whose lane predecessor (``after``, :class:`~server.delivery.policy.LaneFence`) is
  still in flight in an earlier batch waits for that predecessor's answer and then joins the
  next batch, where the predecessor is either committed or known refused (a transaction
  cannot see another one's uncommitted rows, and the earlier batch may still fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.clock import Clock
from server.db.engine import IMMEDIATE, sqlite_sync_engine
from server.db.raw import DRIVER_TRANSACTION
from server.delivery.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from server.delivery.fanout import Hub
from server.delivery.frames import Delivery, dumps, error_frame
from server.delivery.metrics import DeliveryMetrics
from server.delivery.policy import (
    PREDECESSOR_MISSING,
    QUEUE_FULL,
    QUEUE_SHARE_FULL,
    LaneFence,
    Mismatch,
    QueuePolicy,
    QueueUsage,
    UnknownUsers,
    resolve_recipients,
)
from server.delivery.repository import DeliveryRepository, DeviceSets, NewSend, SendRecord
from server.delivery.sqlite_cache import WriterCache
from wire.codes import ErrorCode
from wire.encoding import b64

__all__ = ["AckOp", "GroupCommitWriter", "SendOp", "Sender"]

log = logging.getLogger("vox.delivery")


class Origin(Protocol):
    """The connection an operation came from (answers go back to it)."""

    def sends_answered(self, answers: list[str]) -> None:
        """Queue the answers (accepted or refused) to some of its sends, in their order."""

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
    #: The same send (sender, client id) still in flight in an earlier batch.
    copy_of: SendOp | None = None
    #: The client id of the send's lane predecessor (``after``): stored, or refused.
    after: str | None = None
    #: The predecessor in flight in an earlier batch that this send waits for.
    waiting_on: SendOp | None = None
    #: Sends waiting for this one's answer (resubmitted once it is answered).
    followers: list[SendOp] = field(default_factory=list)
    #: Resubmitted after waiting, not in a batch yet.
    requeued: bool = False
    #: Each payload's standard base64 (the client's text when canonical), reused in the
    #: ``deliver`` and ``ephemeral`` frames; empty: encoded from the bytes.
    texts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AckOp:
    """Acks of one connection: delete (device pk, seq) rows."""

    origin: Origin
    device_pk: int
    seqs: list[int]
    #: False once the transaction that held them failed.
    ok: bool = True


Op = SendOp | AckOp


class _Turn:
    """A batch's permission to run statements (PostgreSQL: :attr:`GroupCommitWriter._running`),
    given back once, at its ``COMMIT`` or when it ends without one."""

    __slots__ = ("_running",)

    def __init__(self, running: asyncio.Semaphore | None) -> None:
        self._running = running

    async def take(self) -> None:
        if self._running is not None:
            await self._running.acquire()

    def release(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.release()


@dataclass(slots=True)
class _Batch:
    """One transaction's operations and what it produced."""

    ops: list[Op]
    #: Given back at the batch's COMMIT (the one-op batches of a redo have none: they run
    #: within their parent's turn).
    turn: _Turn = field(default_factory=lambda: _Turn(None))
    #: Deliveries per recipient device pk (committed rows).
    per_device: dict[int, list[Delivery]] = field(default_factory=dict)
    #: Ephemeral sends validated in the transaction, pushed after it: (op, device pks, ts).
    live: list[tuple[SendOp, list[list[int]], int]] = field(default_factory=list)


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
        pipeline: int = 1,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._sqlite_engine = (
            sqlite_sync_engine(engine) if engine.dialect.name == "sqlite" else None
        )
        #: SQLite: the writer's own thread (started with the first transaction) and its
        #: work: (batch, future, loop) per transaction; ``None`` stops it.
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: SQLite (a database file): WAL checkpoints off the writer's commits, in their own
        #: thread (started and stopped with the writer's thread).
        self._checkpointer: WalCheckpointer | None = None
        #: SQLite: the connection the writer's thread keeps (no pool checkout per batch).
        self._sqlite_conn: Connection | None = None
        #: SQLite: device sets and queue usage kept between transactions.
        self.cache = WriterCache() if self._sqlite_engine is not None else None
        #: Idle PostgreSQL connections of this writer (one per batch in flight).
        self._conns: list[AsyncConnection] = []
        # SQLite has one writer at a time (BEGIN IMMEDIATE) and one thread: one batch.
        self._pipeline = 1 if self._sqlite_engine is not None else max(1, pipeline)
        self._slots = asyncio.Semaphore(self._pipeline)
        #: PostgreSQL: held by the batch running its statements (the others in flight are
        #: committing or waiting to be answered); a new batch is formed only once it is free.
        self._running = None if self._sqlite_engine is not None else asyncio.Semaphore(1)
        self._batches: set[asyncio.Task[None]] = set()
        #: Set once the most recently started batch has been answered.
        self._answered: asyncio.Event | None = None
        #: The most batches that were in flight at once (tests and diagnostics).
        self.peak_in_flight = 0
        #: Durable sends in batches not yet answered, by (sender device pk, client id).
        self._in_flight: dict[tuple[int, str], SendOp] = {}
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
        #: Operations submitted and not in a batch yet, and the future the writer task awaits
        #: while there are none (an ``asyncio.Queue`` costs a microsecond more per operation).
        self._ops: deque[Op] = deque()
        self._ops_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()

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
        for task in list(self._batches):
            task.cancel()
        for task in (self._task, *self._batches):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        thread, self._thread = self._thread, None
        if thread is not None:  # it closes its connection when it takes the stop mark
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)
        conns, self._conns = self._conns, []
        for conn in conns:
            await _discard(conn)
        if self._sqlite_engine is not None:
            self._sqlite_engine.dispose()

    async def drained(self) -> None:
        """Wait until every submitted operation has been committed and answered."""
        await self._idle.wait()

    def submit(self, op: Op) -> None:
        """Queue an operation for the next batch."""
        if not self._outstanding:
            self._idle.clear()
        self._outstanding += 1
        self._ops.append(op)
        waiter = self._ops_waiter
        if waiter is not None:
            self._ops_waiter = None
            if not waiter.done():  # cancelled: the writer is stopping
                waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ops = self._ops
        if self._sqlite_engine is None:
            await self._open_connections()
        while True:
            # A batch is begun only once it can run: the operations that arrive while every
            # slot is busy all wait for the next one (a batch sealed earlier, after its
            # ``max_wait``, left the later ones a whole further cycle behind it). On
            # PostgreSQL that is once the previous batch has sent its COMMIT (its turn): a
            # batch begun while another still ran its statements would wait for that one's
            # queue locks anyway whenever they share a recipient, and only split the
            # operations waiting into more, smaller batches.
            await self._slots.acquire()
            turn = _Turn(self._running)
            await turn.take()
            if not ops:
                self._ops_waiter = loop.create_future()
                await self._ops_waiter
            deadline = loop.time() + self._max_wait
            while len(ops) < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # Let other connections' frames arrive and join this commit (one timer for
                # the rest of the window: a wake-up per batch, not one per 0.5 ms).
                await asyncio.sleep(remaining)
            batch = [ops.popleft() for _ in range(min(len(ops), self._max_batch))]
            previous, answered = self._answered, asyncio.Event()
            self._answered = answered
            task = asyncio.create_task(self._batch(batch, previous, answered, turn))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            self.peak_in_flight = max(self.peak_in_flight, len(self._batches))

    async def _batch(
        self,
        ops: list[Op],
        previous: asyncio.Event | None,
        answered: asyncio.Event,
        turn: _Turn,
    ) -> None:
        """Run one batch's transaction, then answer it after every earlier batch."""
        todo: list[Op] = []
        try:
            here: set[tuple[int, str]] = set()
            for op in ops:
                if isinstance(op, SendOp) and not op.ephemeral:
                    key = (op.sender.device_pk, op.client_id)
                    op.requeued = False
                    first = self._in_flight.get(key)
                    if first is not None and first is not op:
                        if first.waiting_on is not None or first.requeued:
                            # The first copy is not in a batch yet: wait for its answer (then
                            # this one is a repeat of a stored send, or goes again).
                            op.waiting_on = first
                            first.followers.append(op)
                        else:
                            op.copy_of = first  # answered like the first copy, after it
                        continue
                    if op.after is not None and (op.sender.device_pk, op.after) not in here:
                        before = self._in_flight.get((op.sender.device_pk, op.after))
                        if before is not None:  # in an earlier batch: wait for its answer
                            op.waiting_on = before.waiting_on or before
                            op.waiting_on.followers.append(op)
                            self._in_flight[key] = op
                            continue
                    self._in_flight[key] = op
                    here.add(key)
                todo.append(op)
            batch = _Batch(todo, turn)
            if todo:
                await self._process(batch)
            if previous is not None:
                await previous.wait()
            self._answer(batch)
            self._answer_copies(ops)
        except Exception as exc:  # never let the writer die (and never log parameters)
            log.error("group commit failed unexpectedly: %s", exc.__class__.__name__)
        finally:
            for op in todo:  # not the copies, nor the sends now waiting for a predecessor
                if isinstance(op, SendOp) and not op.ephemeral:
                    key = (op.sender.device_pk, op.client_id)
                    if self._in_flight.get(key) is op:
                        del self._in_flight[key]
                    self._release_followers(op)
            turn.release()  # (no commit: nothing to store, or a failure before it)
            answered.set()
            self._slots.release()
            self._outstanding -= len(ops)
            if self._outstanding == 0:
                self._idle.set()

    def _release_followers(self, op: SendOp) -> None:
        """``op`` was answered: the sends that waited for it join the next batch (in order)."""
        followers, op.followers = op.followers, []
        for follower in followers:
            follower.waiting_on, follower.requeued = None, True
            self.submit(follower)  # counted again: its old batch stops counting it

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, batch: _Batch) -> None:
        """Store the batch, retrying one by one after a conflict; every operation ends with
        its answer set (nothing is sent yet)."""
        self._metrics.batch_size.observe(len(batch.ops))
        try:
            started = self._clock.monotonic()
            await self._transaction(batch)
            self._metrics.commit_seconds.observe(self._clock.monotonic() - started)
        except Exception as exc:
            if not _is_conflict(exc):
                self._fail(batch, exc)
                return
            # A concurrent node stored the same (sender, client id): redo one by one, so the
            # de-duplication check sees the other row.
            batch.per_device, batch.live = {}, []
            for op in batch.ops:
                single = _Batch([op])
                try:
                    await self._transaction(single)
                except Exception as error:
                    self._fail(single, error)
                    continue
                batch.live += single.live
                for pk, deliveries in single.per_device.items():
                    batch.per_device.setdefault(pk, []).extend(deliveries)
            for deliveries in batch.per_device.values():
                deliveries.sort(key=lambda d: d.seq)

    async def _transaction(self, batch: _Batch) -> None:
        for op in batch.ops:
            if isinstance(op, SendOp):
                op.answer, op.accepted = None, False
        if self._sqlite_engine is not None:
            # The whole transaction in the writer's own thread: one queue put there and one
            # call_soon_threadsafe back per batch.
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._sqlite_thread, name="vox-writer", daemon=True
                )
                self._thread.start()
            self._jobs.put((batch, done, loop))
            await done
            return
        # PostgreSQL: the writer keeps its connections (no pool checkout and ping per batch)
        # and runs their transactions on asyncpg itself, statements included (the
        # ``server.db.raw.DRIVER_TRANSACTION`` path): SQLAlchemy's execution layer cost more
        # relay CPU per batch than the driver's own work.
        conn = await self._pg_connection()
        driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        try:
            if not driver.is_in_transaction():
                await driver.execute("BEGIN")
            await conn.run_sync(self._apply, batch)
            # Nothing is answered before this returns (the commit is durable). The commit is a
            # round trip of waiting (the WAL flush): the next batch forms and runs its
            # statements meanwhile, on another connection (its first statement waits for this
            # one's queue locks where they share a device). When more operations already wait
            # for a batch, a later transaction's BEGIN rides in the same round trip (this
            # connection is the next idle one taken): it holds no snapshot, lock or
            # transaction id until its first statement.
            batch.turn.release()
            await driver.execute("COMMIT; BEGIN" if self._ops else "COMMIT")
        except BaseException:
            await _discard(conn)
            raise
        self._conns.append(conn)

    async def _open_connections(self) -> None:
        """PostgreSQL: open the connections of every batch in flight before the first one
        (each new connection creates the session functions: a few round trips that would
        otherwise delay the first batches of the first burst)."""
        try:
            while len(self._conns) < self._pipeline:
                conn = await self._engine.connect()
                self._conns.append(await conn.execution_options(**{DRIVER_TRANSACTION: True}))
        except Exception as exc:  # the batches open theirs when they need one
            log.warning("writer connections not opened: %s", exc.__class__.__name__)

    async def _pg_connection(self) -> AsyncConnection:
        """An idle connection of this writer (the most recently used first), or a new one."""
        while self._conns:
            conn = self._conns.pop()
            driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            if not driver.is_closed():
                return conn
            await _discard(conn)  # e.g. the server ended an idle session
        conn = await self._engine.connect()
        return await conn.execution_options(**{DRIVER_TRANSACTION: True})

    def _sqlite_thread(self) -> None:
        """The SQLite writer's thread: run each queued batch's transaction, then hand the
        outcome to the event loop (one ``call_soon_threadsafe`` per batch)."""
        database = self._sqlite_engine.url.database if self._sqlite_engine else None
        if database and database != ":memory:" and not database.startswith("file:"):
            self._checkpointer = WalCheckpointer(database)
        try:
            while (job := self._jobs.get()) is not None:
                batch, done, loop = job
                error: BaseException | None = None
                try:
                    self._sqlite_transaction(batch)
                except BaseException as exc:  # handed to the awaiting batch
                    error = exc
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, done, error)
        finally:
            self._close_sqlite()
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                checkpointer.close()

    def _sqlite_transaction(self, batch: _Batch) -> None:
        assert self._sqlite_engine is not None
        conn = self._sqlite_conn
        if conn is None:
            # Take SQLite's write lock at BEGIN: this transaction reads, then writes.
            conn = self._sqlite_engine.connect().execution_options(**{IMMEDIATE: True})
            self._sqlite_conn = conn
            if self._checkpointer is not None:  # SQLite's own checkpoints: a backstop only
                raw: Any = conn.connection.driver_connection
                raw.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}").close()
        cache = self.cache
        try:
            with conn.begin():
                if cache is not None:
                    cache.begin(conn)
                self._apply(conn, batch)
        except BaseException:
            if cache is not None:
                cache.clear()  # it may hold what the rolled-back transaction counted
            self._close_sqlite()
            raise
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def _close_sqlite(self) -> None:
        conn, self._sqlite_conn = self._sqlite_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _apply(self, conn: Connection, batch: _Batch) -> None:
        batch.per_device, batch.live = {}, []
        ops = batch.ops
        acks = [(op.device_pk, seq) for op in ops if isinstance(op, AckOp) for seq in op.seqs]
        sends = [op for op in ops if isinstance(op, SendOp)]
        durable = [op for op in sends if not op.ephemeral]
        # The acks, the de-duplication lookup (which also finds the lane predecessors named,
        # the fence, step 3) and the device sets of every user named and of every sender: one
        # round trip on PostgreSQL.
        keys = {(op.sender.device_pk, op.client_id) for op in durable}
        keys.update((op.sender.device_pk, op.after) for op in durable if op.after is not None)
        users = {op.sender.user for op in sends}
        users.update(user for op in sends for _, to in op.payloads for user, _ in to)
        if self.cache is not None:
            reads = self.cache.batch_reads(self._repo, conn, acks, sorted(keys), users)
        else:
            # PostgreSQL: the recipients' queues are locked and their counters read (the
            # removals since folded in: ``delivery_queue_usage``) in the same round trip.
            refs = {ref for op in durable for _, to in op.payloads for ref in to}
            reads = self._repo.batch_reads(conn, acks, sorted(keys), users, recipients=refs)
        if acks:
            self._metrics.acks.inc(reads.acked)
        if sends:
            self._store(conn, sends, reads.found, reads.sets, batch, reads.held)

    def _store(
        self,
        conn: Connection,
        ops: list[SendOp],
        found: dict[tuple[int, str], SendRecord],
        sets: DeviceSets,
        batch: _Batch,
        held: dict[int, QueueUsage] | None = None,
    ) -> None:
        now = self._clock.now_ms()
        durable = [op for op in ops if not op.ephemeral]
        storage_low = bool(durable) and self._storage_low()
        # 1. De-duplication: already stored earlier, or twice in this batch.
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
        # 2. Recipients against the device sets.
        resolved: list[tuple[SendOp, list[list[int]]]] = []
        # SQLite: the routes resolved in earlier transactions, valid as long as the device
        # sets they were resolved against (the cache forgets both at once); PostgreSQL: this
        # batch's (its device sets were read for it).
        routes = self.cache.routes if self.cache is not None else {}
        for op in fresh:
            route = (
                op.sender.user,
                op.sender.device_id,
                not op.ephemeral,
                tuple([tuple(to) for _, to in op.payloads]),
            )
            pks = routes.get(route)
            if pks is None:
                pks = self._check_recipients(op, sets.devices)
                if pks is None:
                    continue
                routes[route] = pks
            resolved.append((op, pks))
        # 3. Queue limits (counting this batch's earlier sends too). The targets' queues
        # are locked before their usage is read (PostgreSQL: until the commit; one round
        # trip; from the queue counters, which only the lock's holder changes), so that no
        # other writer, here or on another node, reads and fills the same queue at the same
        # time.
        targets = {pk for op, pks in resolved if not op.ephemeral for group in pks for pk in group}
        usage: dict[int, QueueUsage] = {}
        if targets and self.cache is not None:  # SQLite: BEGIN IMMEDIATE is the lock
            usage = self.cache.queue_usage(self._repo, conn, targets)
        elif targets:
            usage = self._repo.lock_queue_usage(conn, targets, held)
        owners = _owners(sets)
        fence = LaneFence(found)
        to_store: list[NewSend] = []
        accepted: dict[str, SendOp] = {}  # envelope id → send
        live: list[tuple[SendOp, list[list[int]]]] = []
        ids = _envelope_ids(now, len(resolved))
        for n, (op, pks) in enumerate(resolved):
            if op.ephemeral:
                live.append((op, pks))
                continue
            if fence.refusal(op.sender.device_pk, op.after) is not None:
                op.answer = error_frame(
                    PREDECESSOR_MISSING,
                    "the send named in 'after' is not stored; nothing was stored; "
                    "resend the lane from that send",
                    op.client_id,
                )
                self._metrics.sends_refused.labels(PREDECESSOR_MISSING).inc()
                continue
            sender = sets.accounts[op.sender.user]
            if self._refuse_over_quota(op, pks, usage, owners, sender):
                continue
            fence.stored(op.sender.device_pk, op.client_id)
            for (data, _), group in zip(op.payloads, pks, strict=True):
                for pk in group:
                    usage[pk].add(sender, len(data))
            envelope_id = ids[n]
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
                    texts=op.texts,
                )
            )
            op.answer = _accepted(op.client_id, envelope_id, now)
            op.accepted = True
            accepted[envelope_id] = op
        stored = self._repo.insert_sends(conn, to_store)
        batch.per_device = stored.per_device
        if stored.conflicts:
            # Another node stored the same sends first: answer with its envelopes.
            self._answer_conflicts(conn, stored.conflicts, accepted)
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
            batch.live.append((op, pks, now))

    def _answer_conflicts(
        self, conn: Connection, conflicts: list[NewSend], ops: dict[str, SendOp]
    ) -> None:
        keys = [(s.sender_device_pk, s.client_id) for s in conflicts]
        found = self._repo.find_sends(conn, keys)
        for send, key in zip(conflicts, keys, strict=True):
            op = ops[send.envelope_id]
            record = found.get(key)
            if record is None:  # stored and already expired: let the client retry
                op.answer = error_frame(
                    ErrorCode.INTERNAL, "temporary server error; retry", op.client_id
                )
                op.accepted = False
            else:
                op.answer = _accepted(op.client_id, record.envelope_id, record.ts)

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

    def _answer(self, batch: _Batch) -> None:
        now = self._clock.monotonic()
        latencies: list[float] = []
        # One call per connection for all its answers in this batch (in the batch's order).
        answers: dict[Origin, list[str]] = {}
        for op in batch.ops:
            if isinstance(op, SendOp):
                if op.answer is None:  # pragma: no cover - every path sets an answer
                    op.answer = error_frame(
                        ErrorCode.INTERNAL, "send was not processed", op.client_id
                    )
                if op.accepted and not op.ephemeral:
                    latencies.append(now - op.started)
                texts = answers.get(op.origin)
                if texts is None:
                    answers[op.origin] = [op.answer]
                else:
                    texts.append(op.answer)
            else:
                op.origin.acks_committed(op.seqs, op.ok)
        for origin, texts in answers.items():
            origin.sends_answered(texts)
        if latencies:
            self._metrics.sends_accepted.inc(len(latencies))
            self._metrics.send_latency.observe_many(latencies)
        if batch.per_device:
            self._metrics.envelopes_queued.inc(sum(len(v) for v in batch.per_device.values()))
            self._hub.committed(batch.per_device)
        for op, pks, ts in batch.live:
            self._metrics.ephemeral_sent.inc()
            for idx, ((data, _), group) in enumerate(zip(op.payloads, pks, strict=True)):
                text = dumps(
                    {
                        "type": "ephemeral",
                        "from": {"user": op.sender.user, "device": op.sender.device_id},
                        "ts": ts,
                        "data": op.texts[idx] if op.texts else b64(data),
                    }
                )
                self._hub.send_frame(group, text)

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        """The batch's transaction failed: nothing of it is stored; set the error answers."""
        log.error("delivery transaction failed: %s", exc.__class__.__name__)
        batch.per_device, batch.live = {}, []
        for op in batch.ops:
            if isinstance(op, SendOp):
                self._metrics.sends_refused.labels("internal").inc()
                op.answer = error_frame(
                    ErrorCode.INTERNAL, "temporary server error; retry", op.client_id
                )
                op.accepted = False
            else:
                op.ok = False

    def _answer_copies(self, ops: list[Op]) -> None:
        """Sends repeated while their first copy was in flight: the first copy's answer."""
        for op in ops:
            if isinstance(op, SendOp) and op.copy_of is not None:
                first = op.copy_of
                op.answer = first.answer or error_frame(
                    ErrorCode.INTERNAL, "temporary server error; retry", op.client_id
                )
                op.accepted = first.accepted and first.answer is not None
                op.origin.sends_answered([op.answer])


#: One SQLite transaction for the writer's thread: the batch, the future the event loop
#: awaits, and that loop.
_Job = tuple[_Batch, "asyncio.Future[None]", asyncio.AbstractEventLoop]


async def _discard(conn: AsyncConnection) -> None:
    """Close a writer's PostgreSQL connection for good: its transaction is the driver's own
    (SQLAlchemy does not know of it), so it must not go back to the pool; the server rolls
    back whatever it held."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    """In the event loop: the writer thread finished a transaction."""
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _is_conflict(exc: BaseException) -> bool:
    """An integrity violation (SQLAlchemy's, or asyncpg's own on the writer's driver
    transactions: SQLSTATE class 23)."""
    return isinstance(exc, IntegrityError) or str(getattr(exc, "sqlstate", "")).startswith("23")


def _envelope_ids(now_ms: int, n: int) -> list[str]:
    """``n`` envelope ids: 32 lowercase hex characters each, the first 12 the time they are
    stored (Unix ms, as the ``ts`` the sends are answered with), then 80 random bits.

    Ids that grow with time are inserted at the end of every index keyed by them (the sends'
    and payloads' primary keys, the queue's payload index) instead of at random places all
    over them: a batch dirties a few pages of each instead of a page per send, which is what
    its commit writes (SQLite's WAL, PostgreSQL's), and the pages an index needs in memory
    stay the last few however long the history grows."""
    prefix = f"{now_ms:012x}"
    random = os.urandom(10 * n).hex()
    return [prefix + random[20 * i : 20 * i + 20] for i in range(n)]


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
