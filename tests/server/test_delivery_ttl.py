"""Undelivered envelopes expire after the configured TTL, or sooner when the send asks for a
shorter ``ttl``: never delivered once expired, and the sweeper deletes their queue rows,
payloads and send records."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from sqlalchemy import update

from server.db.models_delivery import DeliveryPayload, DeliverySend, QueueEntry
from tests.server.ws_kit import Peer, open_ws, payload, world


async def test_expired_envelopes_are_swept_and_never_delivered(tmp_path: Path) -> None:
    ttl = 60
    async with world(
        tmp_path, {"alice": [1], "bob": [1]}, limits={"envelope_ttl_seconds": ttl}
    ) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("old", [(payload(), [bob])])
            accepted = await a.expect("accepted")
        service = w.relay.state.delivery
        expiry = accepted["ts"] + ttl * 1000
        # One millisecond before the expiry nothing goes; at the expiry everything does.
        assert await service.sweep(now=expiry - 1) == 0
        assert await w.counts() == (1, 1, 1)
        assert await service.sweep(now=expiry) == 1
        assert await w.counts() == (0, 0, 0)
        async with open_ws(w.relay, bob) as b:
            await b.nothing()
        # With the send record gone, the same client id is a new message.
        async with open_ws(w.relay, alice) as a:
            await a.send_message("old", [(payload(), [bob])])
            assert (await a.expect("accepted"))["envelope"] != accepted["envelope"]
        assert await w.count(QueueEntry) == 1
        assert await w.count(DeliveryPayload) == 1 and await w.count(DeliverySend) == 1


async def test_the_sweeper_runs_on_its_own(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}, sweep_interval=0.05) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("m", [(payload(), [bob])])
            await a.expect("accepted")
        # Make the stored envelope already expired, then let the background sweeper find it.
        async with w.relay.state.engine.begin() as conn:
            await conn.execute(update(QueueEntry).values(expires_at=0))
            await conn.execute(update(DeliverySend).values(expires_at=0))
        await w.wait_count(QueueEntry, 0)
        await w.wait_count(DeliverySend, 0)
        assert await w.count(DeliveryPayload) == 0


def _send(client_id: str, to: Peer, ttl: object) -> dict[str, object]:
    return {
        "type": "send",
        "id": client_id,
        "payloads": [{"data": base64.b64encode(payload()).decode(), "to": [to.ref]}],
        "ttl": ttl,
    }


@pytest.mark.parametrize(
    ("ttl", "lifetime_ms"),
    [(2, 2000), (4_294_967_295, 30 * 24 * 3600 * 1000)],
    ids=["a short ttl caps the lifetime", "a long ttl changes nothing"],
)
async def test_a_send_ttl_caps_the_envelope_expiry(
    tmp_path: Path, ttl: int, lifetime_ms: int
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send(_send("m", bob, ttl))
            accepted = await a.expect("accepted")
        service = w.relay.state.delivery
        assert await service.sweep(now=accepted["ts"] + lifetime_ms - 1) == 0
        assert await w.counts() == (1, 1, 1)
        assert await service.sweep(now=accepted["ts"] + lifetime_ms) == 1
        assert await w.counts() == (0, 0, 0)


async def test_an_envelope_past_its_ttl_is_not_delivered_and_the_sweeper_purges_it(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}, sweep_interval=0.05) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send(_send("gone", bob, 1))
            await a.expect("accepted")
            await a.send(_send("kept", bob, None))
            kept = await a.expect("accepted")
        # The background sweeper (real clock) deletes the 1-second envelope on its own...
        await w.wait_count(QueueEntry, 1)
        assert await w.count(DeliverySend) == 1
        # ...and bob, connecting afterwards, gets only the envelope without a ttl.
        async with open_ws(w.relay, bob) as b:
            assert (await b.expect("deliver"))["envelope"] == kept["envelope"]
            await b.nothing()


async def test_an_expired_envelope_is_not_delivered_before_the_sweep(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send(_send("gone", bob, 1))
            await a.expect("accepted")
        await asyncio.sleep(1.1)
        assert await w.count(QueueEntry) == 1  # the sweeper (every 60 s) has not run
        async with open_ws(w.relay, bob) as b:
            await b.nothing()


@pytest.mark.parametrize("ttl", [0, -5, "60", 1.5, True, 4_294_967_296])
async def test_a_bad_ttl_is_refused_and_nothing_is_stored(tmp_path: Path, ttl: object) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send(_send("bad", bob, ttl))
            error = await a.expect("error")
            assert (error["id"], error["code"]) == ("bad", "bad_frame")
            assert error["message"].startswith("ttl")
        assert await w.counts() == (0, 0, 0)
