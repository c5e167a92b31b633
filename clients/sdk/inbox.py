"""Incoming deliveries over :class:`~clients.sdk.core.Core`, a burst at a time.

Every ``deliver``/``ephemeral`` frame that arrived while the previous burst was being handled
is one burst: decrypted and stored in **one** store transaction committed without an fsync
(it survives the process being killed), its events emitted, then made durable by one fsync in
a worker thread (the event loop — other sends, other bursts — keeps running meanwhile), and
only then are its sequence numbers acked. Its receipts that can be encrypted without I/O are
encrypted in the burst's transaction (one commit for both) and queued for the send builder
right after it, which writes them after an fsync covering the burst; the others are sent
after the ack. A process killed anywhere
before that has acked nothing of the burst: the relay redelivers it, and what was committed is
recognised as seen (no duplicate); after a power loss before the fsync, the burst is simply
processed again.

Bursts that follow each other share the fsync and the ack: when more deliveries to ack (not
only ephemeral ones) wait once a burst is emitted, the next burst is handled before the
fsync; when more came during the fsync, the ack waits for the next burst's (one ``ack`` frame
for both, at most :data:`ACK_HOLD` sequence numbers held). Nothing is acked before an fsync
covering it.

Delivery receipts are coalesced (:class:`ReceiptSender`): one receipt per sender and kind per
burst, and while one is on its way to a sender the ids of later bursts wait and travel in
the next one (a ``RECEIPT`` lists up to 512 ids, ``docs/protocol-client.md`` §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from clients.sdk import durable, peers
from clients.sdk.content import Receipt, ReceiptKind
from clients.sdk.core import Core
from clients.sdk.engine import RECEIPT_CHUNK, Process
from clients.sdk.errors import ClientError
from clients.sdk.models import DecryptFailure, Event, SendResult, TypingEvent
from clients.sdk.pipeline import Settled
from clients.sdk.protocol import Envelope, NeedDeviceList, OutgoingSend, Received, SendReceipt
from clients.sdk.sendqueue import Fail, Queued
from crypto.errors import VoxError
from wire.frames import DeliverFrame

__all__ = ["Burst", "ReceiptSender", "SealedReceipt", "process_batch", "run"]

log = logging.getLogger("vox.client")

#: Deliveries handled in one burst at most.
MAX_BURST = 200
#: Sequence numbers of committed bursts held at most for one ``ack`` while more deliveries
#: wait (well below the relay's window of unacked deliveries, ``max_inflight`` 500).
ACK_HOLD = 200


@dataclass(slots=True)
class Burst:
    """What one burst produced: sequence numbers to ack once it is durable, events to emit
    (in arrival order), receipts to send, and the receipts already encrypted in the burst's
    transaction (:meth:`ReceiptSender.seal`)."""

    seqs: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    receipts: list[SendReceipt] = field(default_factory=list)
    sealed: list[SealedReceipt] = field(default_factory=list)


async def process_batch(
    core: Core, batch: list[Process], receipts: ReceiptSender | None = None
) -> Burst:
    """Decrypt and store ``batch`` in one store transaction, committed without an fsync (the
    caller flushes the store before acking). Every envelope handled is acked, failures
    included; ephemeral ones never are. With ``receipts``, the burst's delivery receipts
    that can go at once are encrypted in the same transaction (one commit for the burst and
    its receipts): hand them to :meth:`ReceiptSender.add` right after, before any await."""
    envelopes: list[tuple[Envelope, bool]] = []
    burst = Burst()
    for item in batch:
        durable = isinstance(item.frame, DeliverFrame)
        envelope = core.engine.envelope(item.frame)
        if not isinstance(envelope, Envelope):  # undecodable, or a link offer (not ours)
            if isinstance(item.frame, DeliverFrame):
                burst.seqs.append(item.frame.seq)
            continue
        need = core.protocol.precheck(envelope)
        if isinstance(need, NeedDeviceList):
            with contextlib.suppress(ClientError):
                await peers.refresh_devices(core, need.username)
        envelopes.append((envelope, durable))
    results: list[tuple[Envelope, bool, Received]] = []
    undecodable = list(burst.seqs)
    try:
        # The sessions the burst and its receipts advance are encoded and written once.
        with core.store.transaction(sync=False), core.protocol.sessions.deferred():
            received = core.protocol.receive_all([e for e, _ in envelopes])
            results = [(e, d, r) for (e, d), r in zip(envelopes, received, strict=True)]
            _collect(core, results, burst)
            if receipts is not None:
                burst.sealed, burst.receipts = receipts.seal(burst.receipts)
    except Exception:  # a store failure: retry one by one, ack only what was stored
        log.exception("batch store transaction failed; retrying envelopes one by one")
        core.engine.receipts.drain()  # collected from a rolled-back transaction
        burst = Burst(seqs=undecodable)
        results = []
        for envelope, durable in envelopes:
            try:
                results.append((envelope, durable, core.protocol.receive(envelope)))
            except Exception:
                log.exception("storing an envelope failed; it will be redelivered")
        _collect(core, results, burst)
    return burst


def _collect(core: Core, results: list[tuple[Envelope, bool, Received]], burst: Burst) -> None:
    """Add what ``results`` yield to ``burst``: seqs to ack, events, and receipts (coalesced
    per recipient and kind by the engine)."""
    for envelope, kept, result in results:
        if not kept:
            burst.events += [e for e in result.events if isinstance(e, TypingEvent)]
            continue
        burst.seqs.append(envelope.seq)
        for event in result.events:
            if isinstance(event, DecryptFailure):  # never the content, only metadata
                log.warning("could not decrypt %s from %s:%d (%s); acked", event.envelope_id,
                            event.sender, event.device, event.error)  # fmt: skip
        burst.events += result.events
        for action in result.actions:
            core.engine.receipts.add(action)
    burst.receipts = core.engine.receipts.drain()


@dataclass(frozen=True, slots=True)
class SealedReceipt:
    """A receipt encrypted in a burst's transaction (:meth:`ReceiptSender.seal`)."""

    key: tuple[str, ReceiptKind]
    content: Receipt
    send: OutgoingSend


class ReceiptSender:
    """Sends receipts in the background, at most one on its way per recipient and kind: ids
    that come meanwhile wait and go together in the next (up to
    :data:`~clients.sdk.engine.RECEIPT_CHUNK` per receipt)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._waiting: dict[tuple[str, ReceiptKind], list[bytes]] = {}

    def seal(self, receipts: list[SendReceipt]) -> tuple[list[SealedReceipt], list[SendReceipt]]:
        """In a burst's store transaction: encrypt now each receipt whose recipient and kind
        has none on its way, when that needs no I/O (device lists fresh, a session with every
        device); returns those and the receipts left to :meth:`add`."""
        sealed: list[SealedReceipt] = []
        rest: list[SendReceipt] = []
        for receipt in receipts:
            key = (receipt.to, receipt.kind)
            if key in self._waiting or any(s.key == key for s in sealed) or not self._ready(key):
                rest.append(receipt)
                continue
            content = Receipt(kind=receipt.kind, ids=receipt.ids, sent_at_ms=now_ms())
            try:
                send = self.core.protocol.encode_direct(receipt.to, content)
            except (ClientError, VoxError):  # e.g. no longer trusted: the usual path says why
                rest.append(receipt)
                continue
            sealed.append(SealedReceipt(key, content, send))
        return sealed, rest

    def _ready(self, key: tuple[str, ReceiptKind]) -> bool:
        """Whether a receipt to ``key``'s recipient can be encrypted without I/O (what
        :func:`~clients.sdk.peers.ensure_sessions` would otherwise fetch first)."""
        core, now = self.core, time.monotonic()
        users = (key[0], core.username)
        for user in users:
            known = core.protocol.device_list(user) is not None
            if core.engine.list_due(user, now, known=known):
                return False
        return not core.protocol.missing_sessions(users)

    def add(self, receipts: list[SendReceipt], sealed: Sequence[SealedReceipt] = ()) -> None:
        """Queue ``receipts``; starts a sender for each recipient and kind not already busy.
        ``sealed`` ones go to the send builder at once (call this right after their burst's
        commit, before any await: no send is encrypted between them and their queueing, so
        frames still reach the relay in the order of their ratchet steps)."""
        for one in sealed:
            self._waiting[one.key] = []
            self.core.spawn(self._send_all(one.key, self._submit(one)))
        for receipt in receipts:
            key = (receipt.to, receipt.kind)
            if key in self._waiting:
                self._waiting[key].extend(receipt.ids)
            else:
                self._waiting[key] = list(receipt.ids)
                self.core.spawn(self._send_all(key))

    def _submit(self, receipt: SealedReceipt) -> asyncio.Future[Settled]:
        """Hand a sealed receipt to the send builder; its first build is the ciphertext made in
        the burst's transaction (a retry encrypts it again)."""
        core, to = self.core, receipt.key[0]
        outcome: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        prebuilt = [receipt.send]

        def build() -> list[OutgoingSend]:
            if prebuilt:
                return [prebuilt.pop()]
            return [core.protocol.encode_direct(to, receipt.content)]

        def settle(result: Settled, _: SendResult | None, __: bool) -> None:
            if not outcome.done():
                outcome.set_result(result)

        key = f"send-{secrets.token_hex(8)}"
        core.pipeline.submit(key, {to, core.username}, build, settle)
        return outcome

    async def _send_all(
        self, key: tuple[str, ReceiptKind], sealed: asyncio.Future[Settled] | None = None
    ) -> None:
        to, kind = key
        try:
            if sealed is not None:
                result = await sealed
                if isinstance(result, Fail | Queued):
                    log.info("receipt not sent: %s", result.error)
            while ids := self._waiting[key]:
                chunk, self._waiting[key] = ids[:RECEIPT_CHUNK], ids[RECEIPT_CHUNK:]
                content = Receipt(kind=kind, ids=tuple(chunk), sent_at_ms=now_ms())
                try:
                    await self.core.send_direct(to, content)
                except ClientError as exc:
                    log.info("receipt not sent: %s", exc)
        finally:
            del self._waiting[key]


async def run(
    core: Core, deliveries: asyncio.Queue[Process], ack: Callable[[list[int]], Awaitable[None]]
) -> None:
    """The processor task: bursts of up to :data:`MAX_BURST` deliveries in arrival order;
    each is stored (committed) and emitted, then flushed to disk and acked, then its receipts
    are sent. When more deliveries to ack already wait once a burst is emitted, the next burst
    goes first and one fsync and one ``ack`` cover both (up to :data:`ACK_HOLD` sequence
    numbers): fewer fsyncs and socket writes, and the waiting messages are shown sooner."""
    receipts = ReceiptSender(core)
    seqs: list[int] = []  # of committed bursts, acked after the next flush
    later: list[SendReceipt] = []  # their receipts to send after that ack
    batch: list[Process] = []  # taken off the queue, not handled yet
    while True:
        if not batch:
            batch.append(await deliveries.get())
        _take(deliveries, batch)
        todo, batch = batch, []
        try:
            burst = await process_batch(core, todo, receipts)
            receipts.add([], burst.sealed)  # at once (see ReceiptSender.add)
            await core.emit(burst.events)  # what they show is committed already
            seqs += burst.seqs
            later += burst.receipts
            if len(seqs) < ACK_HOLD and _acked_ones_wait(deliveries, batch):
                continue  # the next burst first: one fsync and one ack for both
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a batch stop the loop; its unacked ones come back
            log.exception("processing deliveries failed")
            if not seqs:
                continue
            # The bursts before it are committed and wait for this fsync: ack them now, not
            # when the next delivery comes.
        try:
            await durable.flush(core.store)  # durable before anything leaves
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("flushing the store failed")
            continue  # what is held is acked after the next flush that succeeds
        if len(seqs) < ACK_HOLD and _acked_ones_wait(deliveries, batch):
            continue  # more came during the fsync: their burst's ack covers these too
        acked, seqs, sending, later = seqs, [], later, []
        if acked:
            await ack(acked)
        receipts.add(sending)


def _take(deliveries: asyncio.Queue[Process], batch: list[Process]) -> None:
    """Move what waits in ``deliveries`` to ``batch`` (up to :data:`MAX_BURST` in all)."""
    while len(batch) < MAX_BURST and not deliveries.empty():
        batch.append(deliveries.get_nowait())


def _acked_ones_wait(deliveries: asyncio.Queue[Process], batch: list[Process]) -> bool:
    """Whether a delivery to ack (not an ephemeral one) waits: taken into ``batch``."""
    _take(deliveries, batch)
    return any(isinstance(item.frame, DeliverFrame) for item in batch)


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)
