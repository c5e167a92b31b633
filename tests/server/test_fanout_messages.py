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
    (text,) = outbox.texts
    message = json.loads(text)
    assert message["d"] == [11, 12]  # a node that ignores "e" still reads both queues
    assert message["e"] == {"11": [[7, ',"x":1}'], [9, ',"x":2}']]}  # 12: too big to carry
    receiver = Hub()
    sinks = {11: _Sink(), 12: _Sink()}
    for pk, sink in sinks.items():
        receiver.attach(pk, sink)
    receiver._dispatch(text.encode())
    assert sinks[11].events == [("committed", ([(7, ',"x":1}'), (9, ',"x":2}')], True))]
    assert sinks[12].events == [("wake", None)]
    # The sending node receives its own message too (pub/sub) and skips it.
    mine = _Sink()
    sender.attach(11, mine)
    sender._dispatch(text.encode())
    assert mine.events == []
