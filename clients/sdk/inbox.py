"""Incoming deliveries over :class:`~clients.sdk.core.Core`: a batch of ``deliver`` and
``ephemeral`` frames is decrypted and stored in one store transaction, events are emitted in
order, receipts are collected by the engine; the shell acks what this returns.
"""

from __future__ import annotations

import contextlib
import logging

from clients.sdk import peers
from clients.sdk.core import Core
from clients.sdk.engine import Process
from clients.sdk.errors import ClientError
from clients.sdk.models import DecryptFailure, TypingEvent
from clients.sdk.protocol import Envelope, NeedDeviceList, Received
from wire.frames import DeliverFrame

__all__ = ["process_batch"]

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
