"""The send pipeline of the shell: encrypt under one lock, write, await answers, retry.

Encryption and the socket write happen under one lock, so frames reach the relay in the
order their ratchet steps were taken; answers are awaited outside it, so several sends are in
flight at once (a window). Concurrent sends are batched: whoever gets the lock builds every
request queued so far in **one** store transaction, then writes their frames in order; if a
build fails the batch is rolled back and each request is built alone, so a bad request never
leaves a trace in the store or disturbs the others. What happens after an answer (or a lost
connection) is the :class:`~clients.sdk.engine.ClientEngine`'s decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clients.sdk import peers, trust
from clients.sdk.content import Content
from clients.sdk.engine import (
    Accepted,
    Answer,
    Fail,
    Retry,
    SendAnswer,
    SendOutcome,
    send_frame,
)
from clients.sdk.errors import RelayUnavailable
from clients.sdk.models import SendResult
from clients.sdk.protocol import OutgoingSend
from clients.sdk.transport import RelaySocket, SocketClosed
from wire.frames import ErrorFrame

if TYPE_CHECKING:
    from clients.sdk.client import VoxClient

__all__ = ["SendPipeline"]

log = logging.getLogger("vox.client")

ANSWER_TIMEOUT = 30.0
Build = Callable[[], list[OutgoingSend]]
Written = list[tuple[OutgoingSend, "asyncio.Future[SendAnswer]"]]


@dataclass(slots=True)
class _Request:
    users: set[str]
    refresh: bool
    build: Build
    done: asyncio.Future[Written] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SendPipeline:
    """Pending sends of one client, keyed by client id."""

    def __init__(self, client: VoxClient) -> None:
        self.client = client
        self.pending: dict[str, asyncio.Future[SendAnswer]] = {}
        self._lock = asyncio.Lock()
        self._queue: list[_Request] = []

    def answered(self, answer: Answer) -> None:
        """The relay answered a send (an unmatched ``error`` is only logged)."""
        future = self.pending.pop(str(answer.client_id), None)
        if future is not None and not future.done():
            future.set_result(answer.frame)
        elif isinstance(answer.frame, ErrorFrame):
            log.warning("relay error: %s %s", answer.frame.code, answer.frame.message)

    def fail_pending(self, error: RelayUnavailable) -> None:
        """The connection is gone: every send awaiting an answer fails (and is retried)."""
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    async def write(self, socket: RelaySocket, send: OutgoingSend) -> asyncio.Future[SendAnswer]:
        """Write one ``send`` frame; the returned future resolves with the relay's answer."""
        future: asyncio.Future[SendAnswer] = asyncio.get_running_loop().create_future()
        self.pending[send.client_id] = future
        try:
            await socket.send(send_frame(send))
        except SocketClosed as exc:
            self.pending.pop(send.client_id, None)
            raise RelayUnavailable(self.client.server_url, str(exc)) from None
        return future

    async def answer(self, send: OutgoingSend, future: asyncio.Future[SendAnswer]) -> SendAnswer:
        """Wait for the relay's answer to ``send``."""
        try:
            return await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except TimeoutError:
            raise RelayUnavailable(self.client.server_url, "no answer to a send") from None
        finally:
            if self.pending.get(send.client_id) is future:
                del self.pending[send.client_id]

    async def transmit(self, send: OutgoingSend) -> SendAnswer:
        """Write one prepared send and wait for its answer (no retries)."""
        socket = await self.client.ensure_connected()
        return await self.answer(send, await self.write(socket, send))

    async def send_direct(
        self, to: str | Iterable[str], content: Content, *, ephemeral: bool = False
    ) -> SendResult | None:
        """Encrypt ``content`` pairwise for ``to`` and send it."""
        users = {to} if isinstance(to, str) else set(to)
        for user in users:
            trust.require_trusted(self.client.store, user)
        protocol = self.client.protocol
        return await self.deliver(
            users, lambda: [protocol.encode_direct(users, content, ephemeral=ephemeral)]
        )

    async def deliver(self, users: set[str], build: Build) -> SendResult | None:
        """Build and transmit until accepted or the engine gives up."""
        client, engine = self.client, self.client.engine
        refresh = False
        for attempt in range(engine.max_attempts):
            try:
                written = await self._build_and_write(users | {client.username}, refresh, build)
            except RelayUnavailable as exc:
                lost = engine.on_unavailable(exc, attempt, reconnects=client.reconnects)
                if isinstance(lost, Fail):
                    raise lost.error from None
                await asyncio.sleep(lost.delay)
                continue
            result: SendResult | None = None
            retry: Retry | None = None
            for send, future in written:
                outcome: SendOutcome
                try:
                    answer = await self.answer(send, future)
                except RelayUnavailable as exc:
                    outcome = engine.on_unavailable(exc, attempt, reconnects=True)
                else:
                    outcome = engine.on_answer(answer, users, attempt)
                if isinstance(outcome, Accepted):
                    if send.accepted is not None:
                        with client.store.transaction():
                            send.accepted()
                    result = SendResult(send.client_id, outcome.ts, send.device_count)
                    continue
                if isinstance(outcome, Fail):
                    raise outcome.error
                retry = outcome
                break
            if retry is None:
                return result
            users = users | retry.refresh
            for name in sorted(retry.refresh):
                await peers.refresh_devices(client, name)
            for user, device in retry.drop:
                client.protocol.sessions.drop(user, device)
            refresh = refresh or bool(retry.refresh)
            await asyncio.sleep(retry.delay)
        raise RelayUnavailable(client.server_url, "gave up sending")  # pragma: no cover

    async def _build_and_write(self, users: set[str], refresh: bool, build: Build) -> Written:
        request = _Request(users, refresh, build)
        self._queue.append(request)
        try:
            async with self._lock:
                if not request.done.done():
                    batch, self._queue = self._queue, []
                    await self._run_builds(batch)
            return await request.done
        except asyncio.CancelledError:
            # Our send was cancelled (e.g. the client is closing): nobody will read its result.
            if request.done.done() and not request.done.cancelled():
                request.done.exception()
            else:
                request.done.cancel()
            raise

    async def _run_builds(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.done.done()]  # drop cancelled sends
        if not batch:
            return
        client = self.client
        try:
            every = set().union(*(r.users for r in batch))
            await peers.ensure_sessions(client, every, refresh=any(r.refresh for r in batch))
            socket = await client.ensure_connected()
            built: list[tuple[_Request, list[OutgoingSend]]] = []
            try:
                with client.store.transaction(sync=False):
                    built = [(r, r.build()) for r in batch]
            except Exception:
                built = []
                for r in batch:
                    try:
                        built.append((r, r.build()))
                    except Exception as exc:
                        if not r.done.done():
                            r.done.set_exception(exc)
            # The advanced ratchets are on disk before a ciphertext leaves; the fsync runs
            # in a thread, so other clients' work and the receive side go on meanwhile.
            await asyncio.to_thread(client.store.flush)
            for r, sends in built:
                written: Written = []
                try:
                    for send in sends:
                        if send.payloads:
                            written.append((send, await self.write(socket, send)))
                except RelayUnavailable as exc:
                    for send, pending in written:
                        self.pending.pop(send.client_id, None)
                        pending.cancel()
                    if not r.done.done():
                        r.done.set_exception(exc)
                    continue
                if not r.done.done():
                    r.done.set_result(written)
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
