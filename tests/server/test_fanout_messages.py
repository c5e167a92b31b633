"""The hub's Redis messages, decoded without Redis: what a node does with another node's
wake-ups (carried envelopes, plain wake-ups) and that it skips its own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from server.delivery.fanout import CARRIED_BYTES, Hub
from server.delivery.frames import Delivery


class _Sink:
    connection_id = "c1"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def wake(self) -> None:
        self.events.append(("wake", None))

    def push_committed(self, envelopes: Sequence[Any], *, remote: bool = False) -> None:
        self.events.append(("committed", ([(d.seq, d.tail) for d in envelopes], remote)))

    def push_frame(self, text: str) -> None:
        self.events.append(("frame", text))

    def replaced(self) -> None:
        self.events.append(("replaced", None))

    def revoked(self, reason: str) -> None:
        self.events.append(("revoked", reason))


class _Outbox:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def put_nowait(self, text: str) -> None:
        self.texts.append(text)


def _hub_with_outbox() -> tuple[Hub, _Outbox]:
    hub = Hub()
    outbox = _Outbox()
    hub._outbox = outbox  # type: ignore[assignment]  # what start() sets up with Redis
    return hub, outbox


def test_committed_envelopes_ride_with_the_wake_up_and_are_delivered_by_the_other_node() -> None:
    sender, outbox = _hub_with_outbox()
    small = [Delivery(7, ',"x":1}'), Delivery(9, ',"x":2}')]
    big = [Delivery(10, ',"d":"' + "A" * CARRIED_BYTES + '"}')]
    sender.committed({11: small, 12: big})
    carrying, plain = outbox.texts
    message = json.loads(carrying)
    assert message["d"] == [11]  # a node that ignores "e" still reads the queue
    assert message["e"] == {"11": [[7, ',"x":1}'], [9, ',"x":2}']]}
    assert json.loads(plain)["d"] == [12] and "e" not in json.loads(plain)  # too big to carry
    receiver = Hub()
    sinks = {11: _Sink(), 12: _Sink()}
    for pk, sink in sinks.items():
        receiver.attach(pk, sink)
    for text in outbox.texts:
        receiver._dispatch(text.encode())
    assert sinks[11].events == [("committed", ([(7, ',"x":1}'), (9, ',"x":2}')], True))]
    assert sinks[12].events == [("wake", None)]
    # The sending node receives its own message too (pub/sub) and skips it.
    mine = _Sink()
    sender.attach(11, mine)
    sender._dispatch(carrying.encode())
    assert mine.events == []


def test_a_big_commit_is_carried_in_several_wake_ups_not_read_from_the_database() -> None:
    """A commit for many devices on another node whose frames total more than one message's
    budget: every device's envelopes still ride along (the old code woke every device past
    the budget, and each of them read its queue from the database)."""
    sender, outbox = _hub_with_outbox()
    tail = ',"d":"' + "A" * 1400 + '"}'
    per_device = {pk: [Delivery(pk * 10 + i, tail) for i in range(3)] for pk in range(1, 41)}
    sender.committed(per_device)
    assert len(outbox.texts) > 1
    assert all(len(text) < 2 * CARRIED_BYTES for text in outbox.texts)
    receiver = Hub()
    sinks = {pk: _Sink() for pk in per_device}
    for pk, sink in sinks.items():
        receiver.attach(pk, sink)
    for text in outbox.texts:
        receiver._dispatch(text.encode())
    for pk, sink in sinks.items():
        assert sink.events == [("committed", ([(pk * 10 + i, tail) for i in range(3)], True))], pk
