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

Delivery receipts are coalesced (:class:`~clients.sdk.receipts.ReceiptSender`): one receipt
per sender and kind per burst, and while one is on its way to a sender the ids of later bursts
wait and travel in the next one (a ``RECEIPT`` lists up to 512 ids, ``docs/protocol-client.md``
§2). They are owed from the burst's commit until the relay took them: a receipt that could
not leave (the process was killed, the socket dropped) goes at the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clients.sdk import durable, peers
from clients.sdk.core import Core
from clients.sdk.engine import Process
from clients.sdk.errors import ClientError
from clients.sdk.models import DecryptFailure, Event, TypingEvent
from clients.sdk.protocol import Envelope, NeedDeviceList, Received, SendReceipt
from clients.sdk.receipts import ReceiptSender, SealedReceipt
from wire.frames import DeliverFrame

__all__ = ["Burst", "process_batch", "run"]

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
    included; ephemeral ones never are. With ``receipts``, the burst's delivery receipts are
    recorded as owed and those that can go at once are encrypted, in the same transaction
    (one commit for the burst and its receipts): hand them to :meth:`ReceiptSender.add` right
    after, before any await."""
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
            if receipts is not None:  # owed from this commit until the relay takes them
                receipts.owe(burst.receipts)
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
        if receipts is not None:
            try:
                receipts.owe(burst.receipts)
            except Exception:  # they are still sent after the ack, only not kept
                log.exception("could not record the burst's receipts as owed")
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


async def run(
    core: Core, deliveries: asyncio.Queue[Process], ack: Callable[[list[int]], Awaitable[None]]
) -> None:
    """The processor task: bursts of up to :data:`MAX_BURST` deliveries in arrival order;
    each is stored (committed) and emitted, then flushed to disk and acked, then its receipts
    are sent. When more deliveries to ack already wait once a burst is emitted, the next burst
    goes first and one fsync and one ``ack`` cover both (up to :data:`ACK_HOLD` sequence
    numbers): fewer fsyncs and socket writes, and the waiting messages are shown sooner."""
    receipts = core.receipts
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
