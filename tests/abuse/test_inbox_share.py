"""Finding 5 (inbox blocking): a stranger can fill only their share of someone's queue.

Measured before: a stranger filled a victim's queue to its depth limit in 3.3 s; every other
sender, friends included, then got ``queue_full``. Now one account other than the
recipient's own may occupy at most ``queue_share_per_sender`` of a device's queue: the
stranger's flood is refused (``queue_share_full``) and friends still get through.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from server.db.models_delivery import QueueEntry
from tests.server.ws_kit import Peer, World, WsClient, open_ws, payload, world

DEPTH = 20
SHARE = 0.25  # 5 envelopes per other account
LIMITS = {
    "max_queue_depth": DEPTH,
    "queue_share_per_sender": SHARE,
    "messages_per_second_per_device": 10_000.0,
}


async def _flood(ws: WsClient, to: list[Peer], prefix: str, n: int) -> Counter[str]:
    for i in range(n):
        await ws.send_message(f"{prefix}{i}", [(payload(), to)])
    answers: Counter[str] = Counter()
    while sum(answers.values()) < n:
        frame = await ws.recv(wait=15)
        if frame["type"] == "deliver":  # copies sent by this account's other devices
            continue
        answers[frame["code"] if frame["type"] == "error" else frame["type"]] += 1
    return answers


async def _stranger_cannot_block_a_friend(w: World) -> None:
    victim = [w["victim", 1], w["victim", 2]]
    async with open_ws(w.relay, w["stranger", 1]) as stranger:
        answers = await _flood(stranger, victim, "s", DEPTH + 5)
        assert answers == Counter({"accepted": 5, "queue_share_full": DEPTH})
        await stranger.send_message("one-more", [(payload(), victim)])
        refused = await stranger.expect("error")
        assert refused["code"] == "queue_share_full"
        assert refused["devices"] == [p.ref for p in victim]
    async with open_ws(w.relay, w["friend", 1]) as friend:
        await friend.send_message("hello", [(payload(), victim)])
        assert (await friend.expect("accepted"))["id"] == "hello"
    # The victim's own other device is never held to a share.
    async with open_ws(w.relay, w["victim", 2]) as own:
        assert await _flood(own, [w["victim", 1]], "o", 8) == Counter({"accepted": 8})
    assert await w.count(QueueEntry) == 2 * (5 + 1) + 8


async def test_a_stranger_cannot_make_a_friends_send_fail_on_sqlite(tmp_path: Path) -> None:
    spec = {"victim": [1, 2], "stranger": [1], "friend": [1]}
    async with world(tmp_path, spec, limits=LIMITS) as w:
        await _stranger_cannot_block_a_friend(w)


@pytest.mark.postgres
async def test_a_stranger_cannot_make_a_friends_send_fail_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    spec = {"victim": [1, 2], "stranger": [1], "friend": [1]}
    async with world(tmp_path, spec, limits=LIMITS, database_url=postgres_url) as w:
        await _stranger_cannot_block_a_friend(w)


@pytest.mark.postgres
async def test_the_share_is_exact_for_concurrent_sends_of_many_devices_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    # Four devices of one stranger account send at once through both writers of the node:
    # together they never get more than the account's share.
    spec = {"victim": [1], "stranger": [1, 2, 3, 4], "friend": [1]}
    async with world(tmp_path, spec, limits=LIMITS, database_url=postgres_url) as w:
        async with (
            open_ws(w.relay, w["stranger", 1]) as a,
            open_ws(w.relay, w["stranger", 2]) as b,
            open_ws(w.relay, w["stranger", 3]) as c,
            open_ws(w.relay, w["stranger", 4]) as d,
        ):
            results = await asyncio.gather(
                *(
                    _flood(ws, [w["victim", 1], *own_others(w, i + 1)], f"d{i}-", 6)
                    for i, ws in enumerate((a, b, c, d))
                )
            )
        total = sum(results, Counter())
        assert total == Counter({"accepted": 5, "queue_share_full": 19})
        # 5 envelopes for the victim, and each one's copies for the 3 other own devices.
        assert await w.count(QueueEntry) == 5 * 4
        async with open_ws(w.relay, w["friend", 1]) as friend:
            await friend.send_message("hello", [(payload(), [w["victim", 1]])])
            await friend.expect("accepted")


def own_others(w: World, device: int) -> list[Peer]:
    """The stranger's other devices (a send must address all of them too)."""
    return [w["stranger", d] for d in (1, 2, 3, 4) if d != device]


async def test_the_share_is_per_account_so_four_fresh_accounts_fill_a_queue(
    tmp_path: Path,
) -> None:
    # The documented limit (docs/threat-model.md, "Another user"): each new account brings
    # its own share, and one address may register four accounts at once with the defaults.
    sybils = [f"sybil{i}" for i in range(int(1 / SHARE))]
    spec = {"victim": [1], "friend": [1], **{name: [1] for name in sybils}}
    async with world(tmp_path, spec, limits=LIMITS) as w:  # all registered from 127.0.0.1
        for name in sybils:
            async with open_ws(w.relay, w[name, 1]) as ws:
                answers = await _flood(ws, [w["victim", 1]], name, 5)
                assert answers == Counter({"accepted": 5})
        async with open_ws(w.relay, w["friend", 1]) as friend:
            await friend.send_message("hello", [(payload(), [w["victim", 1]])])
            assert (await friend.expect("error"))["code"] == "queue_full"
