"""The send half of the shell: executes the engine's send decisions (:mod:`clients.sdk.sendqueue`).

Every send is submitted to the engine's :class:`~clients.sdk.sendqueue.SendQueue`; this module
only does what it answers — fetch device lists and bundles, encrypt, write frames, arm one
timer — and feeds back what happened (frames written, the write failed, answers, the
connection up or down, the time). Which send goes when, what is retried, what fails and what
stays queued is the engine's decision.

Encryption and the socket write happen in one builder task (not a task per send), so
frames reach the relay in the order their ratchet steps were taken (each naming its lane
predecessor in ``after``, so the relay stores a conversation's frames in that order whatever
it refuses or loses); answers are awaited elsewhere (the engine hears them), so sends of
different conversations, and a window of sends of one conversation, are in flight at once.
Builds are batched: the builder takes every request queued so far, builds them in **one**
store transaction, then writes their frames in order, all in one write to the socket, then
takes what was queued meanwhile; if a build fails the batch is rolled back and each request
is built alone, so a bad request never leaves a trace in the store or disturbs the others.
A caller that has a store transaction open anyway (the outbox writing a burst of messages)
may have the queue built in it instead (:meth:`SendPipeline.build_queued`: one commit for
the rows and the builds); the builder then only writes those frames, in build order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clients.sdk import durable, peers, trust
from clients.sdk.content import Content
from clients.sdk.engine import Answer, send_text
from clients.sdk.errors import RelayUnavailable
from clients.sdk.models import SendResult
from clients.sdk.protocol import OutgoingSend
from clients.sdk.sendqueue import (
    Accepted,
    Action,
    Fail,
    Finished,
    FrameAccepted,
    Queued,
    Transmit,
)
from clients.sdk.transport import RelaySocket, SocketClosed
from wire.frames import ErrorFrame

if TYPE_CHECKING:
    from clients.sdk.client import VoxClient

__all__ = ["Build", "SendPipeline", "Settle", "Settled"]

log = logging.getLogger("vox.client")

Build = Callable[[], list[OutgoingSend]]
Settled = Accepted | Fail | Queued
Settle = Callable[[Settled, SendResult | None, bool], None]
"""Told how a send ended: the outcome, the result (when accepted), and whether the send had
been reported queued before (so whoever waited must now hear it went out)."""


@dataclass(slots=True)
class _Job:
    build: Build
    settle: Settle
    frames: dict[str, OutgoingSend] = field(default_factory=dict)
    last: OutgoingSend | None = None
    #: Its build ran (or is running): its frames may have reached the relay, so it can no
    #: longer be cancelled.
    built: bool = False


@dataclass(slots=True)
class _Request:
    key: str
    transmit: Transmit
    job: _Job
    #: Whether it is settled for the builder: written, failed (``error``) or dropped (its
    #: send cancelled or the client closed), so nothing more is done with it.
    finished: bool = False
    #: Why building or writing it failed (reported to the engine).
    error: Exception | None = None

    def fail(self, error: Exception) -> None:
        if not self.finished:
            self.finished, self.error = True, error


Built = list[tuple[_Request, list[OutgoingSend]]]


def now() -> float:
    """The engine's clock (monotonic seconds)."""
    return time.monotonic()


#: Seconds a timer may be armed before the deadline and still be kept (the loop's clock and
#: :func:`now` are both monotonic, read at slightly different moments).
_EARLY = 0.001


class SendPipeline:
    """Pending sends of one client: the engine's decisions, executed."""

    def __init__(self, client: VoxClient) -> None:
        self.client = client
        self.sends = client.engine.sends
        self._jobs: dict[str, _Job] = {}
        #: Transmits waiting for the builder (:meth:`_build_loop`), in the order they came.
        self._queue: list[_Request] = []
        #: Requests built by :meth:`build_queued` (in a caller's transaction), in build order:
        #: the builder writes them before it takes the queue.
        self._built: Built = []
        #: Whether a builder task is running (it drains ``_queue``, a batch at a time).
        self._building = False
        #: Whether the builder holds a batch taken from the queue that it has not built yet
        #: (it awaits sessions or the connection): nothing queued later may be built first.
        self._holding = False
        self._timer: asyncio.TimerHandle | None = None
        #: Whether :meth:`_arm` is scheduled (once per turn of the loop, see :meth:`feed`).
        self._arming = False

    # --- events in ------------------------------------------------------------------------

    def submit(
        self,
        key: str,
        users: Iterable[str],
        build: Build,
        settle: Settle,
        *,
        lane: str | None = None,
        durable: bool = False,
        queued: bool = False,
    ) -> None:
        """Hand a send to the engine; ``settle`` is told how it ends (see :data:`Settle`)."""
        self._jobs[key] = _Job(build, settle)
        try:
            actions = self.sends.submit(
                key, users, now(), lane=lane, durable=durable, queued=queued
            )
        except BaseException:
            del self._jobs[key]
            raise
        self.feed(actions)

    def cancel(self, key: str) -> bool:
        """Withdraw send ``key`` if it has not been built yet (so none of its frames can have
        left): it is forgotten, its ``settle`` never called. Returns whether it is gone
        (``True`` too when it is not pending here); ``False``: it is on its way, it stays.
        Synchronous, like the build (:meth:`_run_builds`): no send is built in between."""
        job = self._jobs.get(key)
        if job is None:
            return key not in self.sends
        if job.built:
            return False
        actions = self.sends.cancel(key, now())
        if actions is None:
            return False
        del self._jobs[key]
        self.feed(actions)
        return True

    def answered(self, answer: Answer) -> None:
        """The relay answered a send (an unmatched ``error`` is only logged)."""
        actions = self.sends.answer(answer.frame, now())
        if not actions and isinstance(answer.frame, ErrorFrame):
            log.warning("relay error: %s %s", answer.frame.code, answer.frame.message)
        self.feed(actions)

    def connection_up(self) -> None:
        """A connection is established."""
        self.feed(self.sends.connection_up(now()))

    def connection_down(self, error: RelayUnavailable, *, reconnecting: bool) -> None:
        """The connection is gone."""
        self.feed(self.sends.connection_down(now(), error, reconnecting=reconnecting))

    def close(self, error: RelayUnavailable) -> None:
        """The client disconnects: every pending send ends now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        built, self._built = self._built, []
        for request in queue:  # never built: they end with the rest below
            request.finished = True
        for request, _ in built:  # built, never written: they end with the rest below
            request.finished = True
        self.feed(self.sends.abandon(error))

    def _tick(self) -> None:
        self._timer = None
        self.feed(self.sends.tick(now()))

    # --- actions out ------------------------------------------------------------------------

    def feed(self, actions: list[Action]) -> None:
        """Execute the engine's actions, then arm the timer for its next deadline — at the end
        of this turn of the event loop, once for every event of the turn (finding the deadline
        walks every pending send; a burst of answers comes in one turn)."""
        for action in actions:
            job = self._jobs.get(action.key)
            if job is None:
                continue
            if isinstance(action, Transmit):
                self._transmit(job, action)
            elif isinstance(action, FrameAccepted):
                send = job.frames.get(action.client_id)
                if send is not None and send.accepted is not None:
                    with self.client.store.transaction():
                        send.accepted()
            elif isinstance(action, Queued):
                job.settle(action, None, False)
            else:
                del self._jobs[action.key]
                self._finished(job, action)
        if not self._arming:
            self._arming = True
            asyncio.get_running_loop().call_soon(self._arm)

    def _finished(self, job: _Job, finished: Finished) -> None:
        outcome = finished.outcome
        result: SendResult | None = None
        if isinstance(outcome, Accepted) and job.last is not None and outcome.ts is not None:
            result = SendResult(job.last.client_id, outcome.ts, job.last.device_count)
        job.settle(outcome, result, finished.announce)

    def _arm(self) -> None:
        """Make sure the engine is ticked by its next deadline. A timer armed for an earlier
        time stays (a tick before anything is due changes nothing, then re-arms): the deadline
        usually moves later (the oldest send answered), so a timer is rarely re-armed, rather
        than cancelled and created again on every event."""
        self._arming = False
        deadline = self.sends.deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline + _EARLY:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - now()), self._tick)

    def _transmit(self, job: _Job, transmit: Transmit) -> None:
        """Queue ``transmit`` for the builder (after refreshing what it names, in a task)."""
        if transmit.refresh or transmit.drop:
            self.client.spawn(self._prepare(job, transmit))
        else:
            self._enqueue(_Request(transmit.key, transmit, job))

    async def _prepare(self, job: _Job, transmit: Transmit) -> None:
        client = self.client
        try:
            for name in sorted(transmit.refresh):
                await peers.refresh_devices(client, name)
            for user, device in transmit.drop:
                client.protocol.sessions.drop(user, device)
        except Exception as exc:
            self.feed(self.sends.write_failed(transmit.key, transmit.attempt, exc, now()))
        else:
            self._enqueue(_Request(transmit.key, transmit, job))

    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        self._start()

    def _start(self) -> None:
        if not self._building:
            self._building = True
            self.client.spawn(self._build_loop())

    async def _build_loop(self) -> None:
        """The builder: one task (not one per send) writes what :meth:`build_queued` built,
        or builds and writes everything queued so far as one batch, then the next, until
        there is nothing left; a send whose build or write failed is reported to the engine."""
        try:
            while self._built or self._queue:
                socket: RelaySocket | None = None
                if self._built:
                    built, self._built = self._built, []
                    batch = [r for r, _ in built]
                else:
                    batch, self._queue = self._queue, []
                    self._holding = True
                    try:
                        socket, built = await self._build(batch)
                    finally:
                        self._holding = False
                if built:
                    await self._write(built, socket)
                for request in batch:
                    if request.error is not None:
                        transmit = request.transmit
                        failed = self.sends.write_failed(
                            transmit.key, transmit.attempt, request.error, now()
                        )
                        self.feed(failed)
        finally:
            self._building = False

    def _error(self, exc: BaseException) -> Exception:
        """What a build or write that ended with ``exc`` reports (a cancelled one: the
        relay is unavailable)."""
        if isinstance(exc, Exception):
            return exc
        return RelayUnavailable(self.client.server_url, "send cancelled")

    def _claim(self, batch: list[_Request]) -> list[_Request]:
        """The requests of ``batch`` to build now: not dropped, their send still pending; each
        is marked built (from here its frames may reach the relay: no more cancelling)."""
        for r in batch:
            if not r.finished and self._jobs.get(r.key) is not r.job:
                r.finished = True  # cancelled meanwhile
        batch = [r for r in batch if not r.finished]
        for r in batch:
            r.job.built = True
        return batch

    def build_queued(self) -> Built | None:
        """Build the queued sends now, in the caller's open store transaction — when that
        needs no waiting (connected, every session and device list at hand, the builder not
        holding an earlier batch); else ``None`` (the builder builds them as usual). The
        builder writes their frames once the caller's transaction committed (it flushes
        first). If a build raises, nothing is built (the sends wait for the builder, as if
        this was not called) and the error propagates: roll the transaction back. If the
        caller's transaction fails after this returned, call :meth:`unbuild` with what it
        returned. Synchronous, like every build: nothing is cancelled meanwhile."""
        queue = self._queue
        if not queue or self._holding or not self.client.connected:
            return None
        users: set[str] = set()
        for r in queue:
            if r.transmit.force:
                return None
            users |= r.transmit.users
        if not self._sessions_ready(users):
            return None
        self._queue = []
        batch = self._claim(queue)
        try:
            # A batch's sends to one device advance its session many times: its state is
            # encoded and written once, at the end of the batch (in the caller's transaction).
            with self.client.protocol.sessions.deferred():
                built = [(r, r.job.build()) for r in batch]
        except BaseException:
            for r in batch:
                r.job.built = False
            self._queue = queue + self._queue
            raise
        if built:
            self._built += built
            self._start()
        return built

    def unbuild(self, built: Built) -> None:
        """The transaction :meth:`build_queued` built ``built`` in was rolled back: they are
        queued again, unbuilt (nothing of them was written)."""
        if not built:
            return
        del self._built[len(self._built) - len(built) :]
        for r, _ in built:
            r.job.built = False
        self._queue = [r for r, _ in built] + self._queue

    def _sessions_ready(self, users: set[str]) -> bool:
        """Whether :func:`peers.ensure_sessions` would have nothing to fetch for ``users``."""
        client, at = self.client, now()
        protocol, engine = client.protocol, client.engine
        for user in users:
            if protocol.device_list(user) is None or engine.list_due(user, at, known=True):
                return False
        return not protocol.missing_sessions(users)

    async def _build(self, batch: list[_Request]) -> tuple[RelaySocket | None, Built]:
        """Build ``batch`` in one transaction (after fetching what it needs), each request
        alone if that fails; a request that fails is marked so. Returns the socket to write
        to and what was built."""
        batch = [r for r in batch if not r.finished]  # drop cancelled sends
        if not batch:
            return None, []
        client = self.client
        try:
            every = set().union(*(r.transmit.users for r in batch))
            force = any(r.transmit.force for r in batch)
            await peers.ensure_sessions(client, every, refresh=force)
            socket = await client.ensure_connected()
        except BaseException as exc:
            error = self._error(exc)
            for r in batch:
                r.fail(error)
            if not isinstance(exc, Exception):
                raise
            return None, []
        # From here to the builds nothing awaits: a send cancelled meanwhile (its job gone)
        # is dropped, and no send can be cancelled once it is being built.
        batch = self._claim(batch)
        built: Built = []
        try:
            with client.store.transaction(sync=False), client.protocol.sessions.deferred():
                built = [(r, r.job.build()) for r in batch]
        except Exception:
            built = []
            for r in batch:
                try:
                    built.append((r, r.job.build()))
                except Exception as exc:
                    r.fail(exc)
        return socket, built

    async def _write(self, built: Built, socket: RelaySocket | None) -> None:
        """Write the frames of ``built`` in order, in one write to the socket (``None``: the
        client's live one), once the transactions that built them are on disk."""
        client = self.client
        try:
            # The advanced ratchets are on disk before a ciphertext leaves; the fsync runs
            # in a thread (shared with the receive side's, clients.sdk.durable), so the event
            # loop goes on meanwhile.
            await durable.flush(client.store)
            if socket is None:
                socket = await client.ensure_connected()
            built = [(r, sends) for r, sends in built if not r.finished]  # (client closed)
            texts: list[str] = []
            sends_of = self.sends
            for r, sends in built:
                sends = [s for s in sends if s.payloads]
                job = self._jobs.get(r.key)
                if job is not None:
                    job.frames = {s.client_id: s for s in sends}
                    job.last = sends[-1] if sends else None
                attempt = r.transmit.attempt
                self.feed(sends_of.expect(r.key, attempt, [s.client_id for s in sends], now()))
                # The lane fence: each frame names the one before it in its conversation.
                after = sends_of.predecessor(r.key)
                for send in sends:
                    texts.append(send_text(send, after))
                    after = send.client_id
            # The whole batch's frames in one write, in the order their ratchet steps were taken.
            try:
                await socket.send_texts(texts)
            except SocketClosed as exc:
                lost = RelayUnavailable(client.server_url, str(exc))
                for r, _ in built:
                    r.fail(lost)
            else:
                for r, _ in built:
                    r.finished = True
        except BaseException as exc:
            error = self._error(exc)
            for r, _ in built:
                r.fail(error)
            if not isinstance(exc, Exception):
                raise

    # --- what callers use --------------------------------------------------------------------

    async def deliver(
        self, users: set[str], build: Build, *, key: str | None = None
    ) -> SendResult | None:
        """Build and send (not kept: a send the relay cannot take fails); returns once the
        relay accepted every frame (``None`` if there was nothing to send). Sessions with every
        device of ``users`` are set up first (name our own username for our other devices)."""
        future: asyncio.Future[tuple[Settled, SendResult | None]]
        future = asyncio.get_running_loop().create_future()

        def settle(outcome: Settled, result: SendResult | None, _: bool) -> None:
            if not future.done():
                future.set_result((outcome, result))

        self.submit(key or f"send-{secrets.token_hex(8)}", users, build, settle)
        outcome, result = await future
        if isinstance(outcome, Fail | Queued):
            raise outcome.error
        return result

    async def send_direct(
        self, to: str | Iterable[str], content: Content, *, ephemeral: bool = False
    ) -> SendResult | None:
        """Encrypt ``content`` pairwise for ``to`` and send it."""
        users = {to} if isinstance(to, str) else set(to)
        for user in users:
            trust.require_trusted(self.client.store, user)
        protocol = self.client.protocol
        return await self.deliver(
            users | {self.client.username},
            lambda: [protocol.encode_direct(users, content, ephemeral=ephemeral)],
        )
