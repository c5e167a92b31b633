"""The hub's Redis messages, decoded without Redis: what a node does with another node's
wake-ups (carried envelopes, plain wake-ups) and that it skips its own. Routing by presence
(real Redis) is in ``test_fanout_routing.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from server.delivery.fanout import Hub


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


async def test_carried_envelopes_are_delivered_and_a_plain_wake_reads_the_queue() -> None:
    text = json.dumps(
        {
            "n": "othernode",
            "k": "wake",
            "d": [11, 12],
            "e": {"11": [[7, ',"x":1}'], [9, ',"x":2}']]},  # 12: too big to carry
        }
    )
    receiver = Hub()
    sinks = {11: _Sink(), 12: _Sink()}
    for pk, sink in sinks.items():
        assert await receiver.attach(pk, sink)
    receiver._dispatch(text.encode())
    assert sinks[11].events == [("committed", ([(7, ',"x":1}'), (9, ',"x":2}')], True))]
    assert sinks[12].events == [("wake", None)]
    # A node's own messages (kicks and drops on the broadcast channel) are skipped.
    mine = _Sink()
    assert await receiver.attach(13, mine)
    own = json.dumps({"n": receiver.node_id, "k": "wake", "d": [13]}, separators=(",", ":"))
    receiver._dispatch(own.encode())
    assert mine.events == []


def _kick(device_pk: int, attach: int | None) -> bytes:
    message: dict[str, Any] = {"n": "othernode", "k": "kick", "d": device_pk, "c": "other"}
    if attach is not None:
        message["a"] = attach
    return json.dumps(message).encode()


async def test_a_kick_replaces_only_a_connection_with_a_lower_attach_number() -> None:
    """The attach number decides: lower (stale) kicks are ignored, higher ones replace; a
    connection not claimed yet waits for its claim (which outnumbers every kick sent so far);
    a kick without a number (a node of the previous version) always replaces."""
    hub = Hub()
    claimed, unclaimed, legacy = _Sink(), _Sink(), _Sink()
    for pk, sink in ((1, claimed), (2, unclaimed), (3, legacy)):
        assert await hub.attach(pk, sink)
    hub._attach[1] = 500  # as if claimed in Redis
    hub._dispatch(_kick(1, 499))
    hub._dispatch(_kick(2, 499))
    assert hub.local(1) is claimed and claimed.events == []
    assert hub.local(2) is unclaimed and unclaimed.events == []
    assert hub._kicked == {2: 499}  # checked against its claim
    hub._dispatch(_kick(1, 501))
    assert hub.local(1) is None and claimed.events == [("replaced", None)]
    hub._dispatch(_kick(3, None))
    assert hub.local(3) is None and legacy.events == [("replaced", None)]
    hub.detach(2, unclaimed)
    assert hub._kicked == {}
