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
from clients.sdk.transport import SocketClosed
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
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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
        #: Whether a builder task is running (it drains ``_queue``, a batch at a time).
        self._building = False
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
        for request in queue:  # never built: they end with the rest below
            request.done.cancel()
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
        if not self._building:
            self._building = True
            self.client.spawn(self._build_loop())

    async def _build_loop(self) -> None:
        """The builder: one task (not one per send) builds and writes everything queued so
        far as one batch (:meth:`_run_builds`), then the next, until the queue is empty; a
        send whose build or write failed is reported to the engine."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._run_builds(batch)
                for request in batch:
                    if request.done.cancelled():
                        continue
                    error = request.done.exception()
                    if isinstance(error, Exception):
                        transmit = request.transmit
                        failed = self.sends.write_failed(
                            transmit.key, transmit.attempt, error, now()
                        )
                        self.feed(failed)
        finally:
            self._building = False

    async def _run_builds(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.done.done()]  # drop cancelled sends
        if not batch:
            return
        client = self.client
        try:
            every = set().union(*(r.transmit.users for r in batch))
            force = any(r.transmit.force for r in batch)
            await peers.ensure_sessions(client, every, refresh=force)
            socket = await client.ensure_connected()
            # From here to the builds nothing awaits: a send cancelled meanwhile (its job
            # gone) is dropped, and no send can be cancelled once it is being built.
            for r in batch:
                if not r.done.done() and self._jobs.get(r.key) is not r.job:
                    r.done.set_result(None)
            batch = [r for r in batch if not r.done.done()]
            for r in batch:
                r.job.built = True
            built: list[tuple[_Request, list[OutgoingSend]]] = []
            try:
                with client.store.transaction(sync=False):
                    built = [(r, r.job.build()) for r in batch]
            except Exception:
                built = []
                for r in batch:
                    try:
                        built.append((r, r.job.build()))
                    except Exception as exc:
                        r.done.set_exception(exc)
            # The advanced ratchets are on disk before a ciphertext leaves; the fsync runs
            # in a thread (shared with the receive side's, clients.sdk.durable), so the event
            # loop goes on meanwhile.
            await durable.flush(client.store)
            texts: list[str] = []
            for r, sends in built:
                sends = [s for s in sends if s.payloads]
                job = self._jobs.get(r.key)
                if job is not None:
                    job.frames = {s.client_id: s for s in sends}
                    job.last = sends[-1] if sends else None
                attempt = r.transmit.attempt
                self.feed(self.sends.expect(r.key, attempt, [s.client_id for s in sends], now()))
                # The lane fence: each frame names the one before it in its conversation.
                after = self.sends.predecessor(r.key)
                for send in sends:
                    texts.append(send_text(send, after))
                    after = send.client_id
            # The whole batch's frames in one write, in the order their ratchet steps were taken.
            try:
                await socket.send_texts(texts)
            except SocketClosed as exc:
                lost = RelayUnavailable(client.server_url, str(exc))
                for r, _ in built:
                    if not r.done.done():  # (cancelled meanwhile)
                        r.done.set_exception(lost)
            else:
                for r, _ in built:
                    if not r.done.done():
                        r.done.set_result(None)
        except BaseException as exc:
            for r in batch:
                if not r.done.done():
                    error = (
                        exc
                        if isinstance(exc, Exception)
                        else RelayUnavailable(client.server_url, "send cancelled")
                    )
                    r.done.set_exception(error)
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
