"""The processor loop's acks (:func:`clients.sdk.inbox.run`): bursts that follow each other
share one fsync and one ``ack``, and nothing is ever acked before an fsync that covers it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from clients.sdk import durable, inbox
from clients.sdk.engine import Process
from clients.sdk.inbox import Burst
from clients.sdk.receipts import ReceiptSender
from wire.frames import DeliverFrame, EphemeralFrame


def typing() -> Process:
    frame = EphemeralFrame.model_validate(
        {"from": {"user": "alice", "device": 1}, "ts": 1, "data": "AA=="}
    )
    return Process(frame)


def delivery(seq: int) -> Process:
    frame = DeliverFrame.model_validate(
        {"seq": seq, "envelope": f"e{seq}", "from": {"user": "alice", "device": 1}, "ts": 1,
         "data": "AA=="},
    )  # fmt: skip
    return Process(frame)


class Loop:
    """``inbox.run`` over a stub burst processor: a log of what happened, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.deliveries: asyncio.Queue[Process] = asyncio.Queue()
        self.log: list[str] = []
        self.on_emit: Callable[[int], None] = lambda n: None
        self.on_flush: Callable[[int], None] = lambda n: None
        self.acked: list[int] = []
        self.store = object()
        self.receipts = ReceiptSender(self)  # type: ignore[arg-type]
        self._emits = self._flushes = 0
        monkeypatch.setattr(inbox, "process_batch", self._process)
        monkeypatch.setattr(durable, "flush", self._flush)

    async def _process(self, core: Any, batch: list[Process], receipts: Any) -> Burst:
        seqs = [item.frame.seq for item in batch if isinstance(item.frame, DeliverFrame)]
        self.log.append(f"burst {seqs}" + " +typing" * (len(batch) - len(seqs)))
        return Burst(seqs=seqs)

    async def _flush(self, store: Any) -> None:
        self._flushes += 1
        self.log.append("flush")
        self.on_flush(self._flushes)
        await asyncio.sleep(0)  # the fsync runs in a thread meanwhile

    async def emit(self, events: Any) -> None:
        self._emits += 1
        self.on_emit(self._emits)

    async def ack(self, seqs: list[int]) -> None:
        self.log.append(f"ack {seqs}")
        self.acked += seqs

    def spawn(self, coro: Any) -> None:
        coro.close()

    def add(self, seqs: range) -> None:
        for seq in seqs:
            self.deliveries.put_nowait(delivery(seq))

    async def run_until_acked(self, n: int) -> None:
        task = asyncio.create_task(inbox.run(self, self.deliveries, self.ack))  # type: ignore[arg-type]
        try:
            for _ in range(500):
                if len(self.acked) >= n:
                    break
                await asyncio.sleep(0)
            assert len(self.acked) == n
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_deliveries_that_came_during_the_fsync_are_acked_with_the_burst_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = Loop(monkeypatch)
    loop.on_flush = lambda n: loop.add(range(4, 7)) if n == 1 else None
    loop.add(range(1, 4))
    await loop.run_until_acked(6)
    # One ack for both bursts, after the second one's fsync (the first was durable already).
    assert loop.log == [
        "burst [1, 2, 3]", "flush", "burst [4, 5, 6]", "flush", "ack [1, 2, 3, 4, 5, 6]"
    ]  # fmt: skip


async def test_deliveries_waiting_once_a_burst_is_shown_share_its_fsync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = Loop(monkeypatch)
    loop.on_emit = lambda n: loop.add(range(3, 5)) if n == 1 else None
    loop.add(range(1, 3))
    await loop.run_until_acked(4)
    assert loop.log == ["burst [1, 2]", "burst [3, 4]", "flush", "ack [1, 2, 3, 4]"]


async def test_an_ack_goes_out_once_enough_is_held_although_more_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = Loop(monkeypatch)
    more = itertools.count(1, 100)

    def arrive(_: int) -> None:  # a burst of 100 more after every one: never idle
        start = next(more)
        loop.add(range(start + 100, start + 200))

    loop.on_emit = arrive
    loop.add(range(1, 101))
    await loop.run_until_acked(inbox.ACK_HOLD)
    acks = [entry for entry in loop.log if entry.startswith("ack")]
    assert loop.acked == list(range(1, inbox.ACK_HOLD + 1))  # one ack: the two bursts
    first, second = (f"burst {list(range(start, start + 100))}" for start in (1, 101))
    assert loop.log[:4] == [first, second, "flush", acks[0]]


async def test_an_ack_does_not_wait_for_ephemeral_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a typing notification came meanwhile: nothing to share an ack with.
    loop = Loop(monkeypatch)
    loop.on_emit = lambda n: loop.deliveries.put_nowait(typing()) if n == 1 else None
    loop.on_flush = lambda n: loop.deliveries.put_nowait(typing()) if n == 1 else None
    loop.add(range(1, 3))
    await loop.run_until_acked(2)
    assert loop.log[:3] == ["burst [1, 2]", "flush", "ack [1, 2]"]


async def test_a_failing_burst_does_not_hold_the_ack_of_the_bursts_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Burst [1, 2] waits for the fsync of the burst after it, which fails; nothing else comes.
    loop = Loop(monkeypatch)
    process = loop._process

    async def failing(core: Any, batch: list[Process], receipts: Any) -> Burst:
        if any(isinstance(item.frame, DeliverFrame) and item.frame.seq > 2 for item in batch):
            loop.log.append("burst fails")
            raise RuntimeError("a store error")
        return await process(core, batch, receipts)

    monkeypatch.setattr(inbox, "process_batch", failing)
    loop.on_emit = lambda n: loop.add(range(3, 5)) if n == 1 else None
    loop.add(range(1, 3))
    await loop.run_until_acked(2)
    assert loop.log == ["burst [1, 2]", "burst fails", "flush", "ack [1, 2]"]
