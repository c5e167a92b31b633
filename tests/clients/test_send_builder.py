"""Structural properties of the send path the SDK's CPU per message relies on (counted, never
timed): one builder task builds a burst of sends — not a task per send — and the engine's
per-lane index of pending sends stays exactly the lane's sends in order, whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.sdk.errors import RelayUnavailable
from clients.sdk.sendqueue import SendQueue, Transmit
from tests.clients.conftest import Factory
from tests.clients.kit import receive_texts, texts
from wire.frames import AcceptedFrame

BURST = 20


async def test_a_burst_of_sends_is_built_by_one_task_not_one_per_send(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    spawned: list[str] = []
    spawn = alice.spawn

    def counting(coro: Awaitable[Any]) -> None:
        spawned.append(getattr(coro, "__qualname__", type(coro).__name__))
        spawn(coro)

    alice.spawn = counting  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(BURST)))
    finally:
        alice.spawn = spawn  # type: ignore[method-assign]
    # Old code: one `SendPipeline._attempt` task per send (20). Now: a builder per batch at most.
    assert len(spawned) < BURST // 2, spawned
    assert all(name == "SendPipeline._build_loop" for name in spawned), spawned
    received = await receive_texts(bob, "alice", BURST + 1)
    assert texts(received, "alice") == ["set-up", *(f"m{i}" for i in range(BURST))]


async def test_the_timer_is_armed_once_per_turn_of_the_loop_not_once_per_event(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    sends = alice.pipeline.sends
    looked = 0
    deadline = sends.deadline

    def counting() -> float | None:
        nonlocal looked
        looked += 1
        return deadline()

    sends.deadline = counting  # type: ignore[method-assign]
    try:
        alice.pipeline.connection_up()  # events of one turn: one look at the deadline
        alice.pipeline.connection_up()
        alice.pipeline.connection_up()
        assert looked == 0
        await asyncio.sleep(0)
        assert looked == 1
        await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(BURST)))
    finally:
        sends.deadline = deadline  # type: ignore[method-assign]
    # Old code: after every event (each send's submit, expect and answer: over 3 per send).
    assert looked < 2 * BURST, looked
    received = await receive_texts(bob, "alice", BURST + 1)
    assert texts(received, "alice") == ["set-up", *(f"m{i}" for i in range(BURST))]


_LANES = ["bob", "carol", "dave"]
_ops = st.lists(
    st.tuples(
        st.sampled_from(["submit", "write", "accept", "fail", "cancel", "down", "up", "tick"]),
        st.integers(0, 50),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops, st.integers(1, 4))
def test_the_lane_index_is_always_each_lanes_pending_sends_in_order(
    ops: list[tuple[str, int]], window: int
) -> None:
    q = SendQueue(lane_window=window, max_attempts=2)
    q.connection_up(0.0)
    now, submitted = 0.0, 0
    written: dict[str, int] = {}  # key -> attempt of its Transmit

    def track(actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                written[action.key] = action.attempt

    for op, n in ops:
        now += 0.5
        if op == "submit":
            lane = _LANES[n % 3] if n % 4 else None
            track(q.submit(f"k{submitted}", {"bob"}, now, lane=lane, durable=n % 2 == 0))
            submitted += 1
        elif written:
            key = sorted(written)[n % len(written)]
            attempt = written[key]
            if op == "write":
                track(q.expect(key, attempt, [key], now))
            elif op == "accept":
                track(q.answer(AcceptedFrame(id=key, envelope="e", ts=1), now))
            elif op == "fail":
                track(q.write_failed(key, attempt, RelayUnavailable("r", "gone"), now))
            elif op == "cancel":
                track(q.cancel(key, now) or [])
        if op == "down":
            track(q.connection_down(now, RelayUnavailable("r", "gone"), reconnecting=True))
        elif op == "up":
            track(q.connection_up(now))
        elif op == "tick":
            track(q.tick(now + 60))
        pending = list(q._sends.values())
        assert [s.order for s in pending] == sorted(s.order for s in pending)
        for lane in _LANES:
            assert q._lanes.get(lane, []) == [s for s in pending if s.lane == lane]
        assert all(q._lanes.values())  # an emptied lane is dropped
