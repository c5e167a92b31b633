"""Incoming deliveries over :class:`~clients.sdk.core.Core`, a burst at a time.

Every ``deliver``/``ephemeral`` frame that arrived while the previous burst was being handled
is one burst: decrypted and stored in **one** store transaction committed without an fsync
(it survives the process being killed), its events emitted, then made durable by one fsync in
a worker thread (the event loop — other sends, other bursts — keeps running meanwhile), and
only then are its sequence numbers acked and its receipts sent. A process killed anywhere
before that has acked nothing of the burst: the relay redelivers it, and what was committed is
recognised as seen (no duplicate); after a power loss before the fsync, the burst is simply
processed again.

Delivery receipts are coalesced (:class:`ReceiptSender`): one receipt per sender and kind per
burst, and while one is on its way to a sender the ids of later bursts wait and travel in
the next one (a ``RECEIPT`` lists up to 512 ids, ``docs/protocol-client.md`` §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clients.sdk import durable, peers
from clients.sdk.content import Receipt, ReceiptKind
from clients.sdk.core import Core
from clients.sdk.engine import RECEIPT_CHUNK, Process
from clients.sdk.errors import ClientError
from clients.sdk.models import DecryptFailure, Event, TypingEvent
from clients.sdk.protocol import Envelope, NeedDeviceList, Received, SendReceipt
from wire.frames import DeliverFrame

__all__ = ["Burst", "ReceiptSender", "process_batch", "run"]

log = logging.getLogger("vox.client")

#: Deliveries handled in one burst at most.
MAX_BURST = 200


@dataclass(slots=True)
class Burst:
    """What one burst produced: sequence numbers to ack once it is durable, events to emit
    (in arrival order) and receipts to send."""

    seqs: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    receipts: list[SendReceipt] = field(default_factory=list)


async def process_batch(core: Core, batch: list[Process]) -> Burst:
    """Decrypt and store ``batch`` in one store transaction, committed without an fsync (the
    caller flushes the store before acking). Every envelope handled is acked, failures
    included; ephemeral ones never are."""
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
    try:
        with core.store.transaction(sync=False):
            received = core.protocol.receive_all([e for e, _ in envelopes])
        results = [(e, d, r) for (e, d), r in zip(envelopes, received, strict=True)]
    except Exception:  # a store failure: retry one by one, ack only what was stored
        log.exception("batch store transaction failed; retrying envelopes one by one")
        results = []
        for envelope, durable in envelopes:
            try:
                results.append((envelope, durable, core.protocol.receive(envelope)))
            except Exception:
                log.exception("storing an envelope failed; it will be redelivered")
    for envelope, durable, result in results:
        if not durable:
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
    return burst


class ReceiptSender:
    """Sends receipts in the background, at most one on its way per recipient and kind: ids
    that come meanwhile wait and go together in the next (up to
    :data:`~clients.sdk.engine.RECEIPT_CHUNK` per receipt)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._waiting: dict[tuple[str, ReceiptKind], list[bytes]] = {}

    def add(self, receipts: list[SendReceipt]) -> None:
        """Queue ``receipts``; starts a sender for each recipient and kind not already busy."""
        for receipt in receipts:
            key = (receipt.to, receipt.kind)
            if key in self._waiting:
                self._waiting[key].extend(receipt.ids)
            else:
                self._waiting[key] = list(receipt.ids)
                self.core.spawn(self._send_all(key))

    async def _send_all(self, key: tuple[str, ReceiptKind]) -> None:
        to, kind = key
        try:
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
    each is stored (committed), emitted, flushed to disk, acked, then its receipts are sent."""
    receipts = ReceiptSender(core)
    while True:
        batch = [await deliveries.get()]
        while not deliveries.empty() and len(batch) < MAX_BURST:
            batch.append(deliveries.get_nowait())
        try:
            burst = await process_batch(core, batch)
            await core.emit(burst.events)  # what they show is committed already
            await durable.flush(core.store)  # durable before anything leaves
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a batch stop the loop; unacked ones come back
            log.exception("processing deliveries failed")
            continue
        if burst.seqs:
            await ack(burst.seqs)
        receipts.add(burst.receipts)


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)
