"""The lane fence through a real relay (SQLite and PostgreSQL): with a window of a
conversation's messages on their way at once, a refused or lost message is never overtaken
by the next ones (the sans-I/O cases are in ``test_engine.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from clients.sdk import Event, VoxClient
from server.delivery.connection import DeviceConnection
from server.delivery.frames import FrameError, SendIn
from tests.clients.conftest import Factory
from tests.clients.kit import texts, wait_for
from tests.server.relay_harness import Relay
from wire.codes import ErrorCode

N = 6


@pytest.fixture
def relay(relay_on_both: Relay) -> Relay:
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return relay_on_both


def intercept(
    relay: Relay, act: Callable[[DeviceConnection, SendIn], bool]
) -> list[tuple[str, str | None]]:
    """Run ``act`` on each of alice's durable send frames as the relay reads it (before any
    check); ``act`` returning ``True`` means the frame was dealt with (not handled further).
    Returns the (id, after) of alice's send frames, as they arrived."""
    service = relay.state.delivery
    handle = service._handle_send
    seen: list[tuple[str, str | None]] = []

    def handle_send(conn: DeviceConnection, frame: SendIn) -> None:
        if conn.device.user == "alice" and not frame["ephemeral"]:
            seen.append((frame["id"], frame["after"]))
            if act(conn, frame):
                return
        handle(conn, frame)

    service._handle_send = handle_send  # type: ignore[method-assign]
    return seen


def refused(relay: Relay, reason: str) -> float:
    value = relay.state.metrics.registry.get_sample_value(
        "vox_sends_refused_total", {"reason": reason}
    )
    return value or 0.0


async def chat(make_client: Factory) -> tuple[VoxClient, VoxClient, list[Event]]:
    alice, bob = await make_client("alice"), await make_client("bob")
    got: list[Event] = []
    bob.on_event(got.append)
    await alice.connect()
    await bob.connect()
    await alice.send_text("bob", "warm-up")  # sessions set up
    await wait_for(lambda: texts(got, "alice") == ["warm-up"])
    return alice, bob, got


async def send_window(alice: VoxClient) -> None:
    """N messages of one conversation at once (the window lets them all go out)."""
    assert alice.engine.sends.lane_window >= N
    await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(N)))


@pytest.mark.parametrize("fence", [False, True], ids=["no-fence", "fence"])
async def test_a_busy_first_message_is_never_overtaken_by_the_rest_of_the_window(
    relay: Relay, make_client: Factory, fence: bool
) -> None:
    alice, _, got = await chat(make_client)
    if not fence:  # a client that pipelines without naming predecessors
        alice.engine.sends.predecessor = lambda key: None  # type: ignore[method-assign]
    busy = [True]

    def refuse_once(conn: DeviceConnection, frame: SendIn) -> bool:
        if busy.pop() if busy else False:
            raise FrameError(ErrorCode.BUSY, "injected busy", frame["id"])
        return False

    seen = intercept(relay, refuse_once)
    await send_window(alice)
    await wait_for(lambda: len(texts(got, "alice")) == N + 1)
    received = texts(got, "alice")[1:]
    if not fence:  # the rest of the window overtook the refused first message
        assert received == [*(f"m{i}" for i in range(1, N)), "m0"]
        return
    assert received == [f"m{i}" for i in range(N)]
    first = [after for _, after in seen[:N]]
    assert first == [None, *(cid for cid, _ in seen[: N - 1])]  # each names the one before
    assert refused(relay, "predecessor_missing") >= 1
    await asyncio.sleep(0.3)  # nothing more (no duplicates) may arrive
    assert len(texts(got, "alice")) == N + 1


async def test_a_connection_dropped_mid_window_never_lets_a_later_message_overtake(
    relay: Relay, make_client: Factory
) -> None:
    """The relay drops the connection on the window's third frame: it and the frames behind
    it are lost; the client resends them in order on the next connection, exactly once.
    (Over one connection the relay never reads a frame behind a lost one; a relay that does,
    with and without the fence, is in ``test_engine.py``.)"""
    alice, _, got = await chat(make_client)
    dropped = [2]  # the third frame of the window: it and everything behind it are lost

    def drop_once(conn: DeviceConnection, frame: SendIn) -> bool:
        if not dropped:
            return False
        if dropped[0] > 0:
            dropped[0] -= 1
            return False
        dropped.clear()
        conn.abort("injected drop")
        return True

    intercept(relay, drop_once)
    await send_window(alice)
    await wait_for(lambda: len(texts(got, "alice")) == N + 1)
    await asyncio.sleep(0.3)  # nothing more (no duplicates) may arrive
    assert texts(got, "alice")[1:] == [f"m{i}" for i in range(N)]
