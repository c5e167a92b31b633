"""Incoming deliveries over :class:`~clients.sdk.core.Core`: a batch of ``deliver`` and
``ephemeral`` frames is decrypted and stored in one store transaction, events are emitted in
order, receipts are collected by the engine; the shell acks what this returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from clients.sdk import peers
from clients.sdk.content import Receipt
from clients.sdk.core import Core
from clients.sdk.engine import Process
from clients.sdk.errors import ClientError
from clients.sdk.models import DecryptFailure, TypingEvent
from clients.sdk.protocol import Envelope, NeedDeviceList, Received
from wire.frames import DeliverFrame

__all__ = ["process_batch", "run"]

log = logging.getLogger("vox.client")


async def process_batch(core: Core, batch: list[Process]) -> list[int]:
    """Decrypt and store a batch in one store transaction; returns the sequence numbers to
    ack (every envelope handled, failures included; ephemeral ones are never acked)."""
    envelopes: list[tuple[Envelope, bool]] = []
    seqs: list[int] = []
    for item in batch:
        durable = isinstance(item.frame, DeliverFrame)
        envelope = core.engine.envelope(item.frame)
        if not isinstance(envelope, Envelope):  # undecodable, or a link offer (not ours)
            if isinstance(item.frame, DeliverFrame):
                seqs.append(item.frame.seq)
            continue
        need = core.protocol.precheck(envelope)
        if isinstance(need, NeedDeviceList):
            with contextlib.suppress(ClientError):
                await peers.refresh_devices(core, need.username)
        envelopes.append((envelope, durable))
    results: list[tuple[Envelope, bool, Received]] = []
    try:
        with core.store.transaction():
            results = [(e, d, core.protocol.receive(e)) for e, d in envelopes]
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
            await core.emit([e for e in result.events if isinstance(e, TypingEvent)])
            continue
        seqs.append(envelope.seq)
        for event in result.events:
            if isinstance(event, DecryptFailure):  # never the content, only metadata
                log.warning("could not decrypt %s from %s:%d (%s); acked", event.envelope_id,
                            event.sender, event.device, event.error)  # fmt: skip
        await core.emit(result.events)
        for action in result.actions:
            core.engine.receipts.add(action)
    return seqs


async def run(
    core: Core, deliveries: asyncio.Queue[Process], ack: Callable[[list[int]], Awaitable[None]]
) -> None:
    """The processor task: batches of up to 100 deliveries in arrival order; ack what was
    handled; then one receipt per sender and kind (sent in the background)."""
    while True:
        batch = [await deliveries.get()]
        while not deliveries.empty() and len(batch) < 100:
            batch.append(deliveries.get_nowait())
        try:
            seqs = await process_batch(core, batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a batch stop the loop; unacked ones come back
            log.exception("processing deliveries failed")
            seqs = []
        if seqs:
            await ack(seqs)
        for receipt in core.engine.receipts.drain():
            content = Receipt(kind=receipt.kind, ids=receipt.ids, sent_at_ms=now_ms())
            core.spawn(_quietly(core.send_direct(receipt.to, content)))


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except ClientError as exc:
        log.info("receipt not sent: %s", exc)


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)
