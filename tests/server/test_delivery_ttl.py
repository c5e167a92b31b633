"""Undelivered envelopes expire after the configured TTL: never delivered once expired, and the
sweeper deletes their queue rows, payloads and send records."""

from __future__ import annotations

from pathlib import Path

from server.db.models_delivery import DeliveryPayload, DeliverySend, QueueEntry
from tests.server.ws_kit import open_ws, payload, world


async def test_expired_envelopes_are_swept_and_never_delivered(tmp_path: Path) -> None:
    ttl = 60
    async with world(
        tmp_path, {"alice": [1], "bob": [1]}, limits={"envelope_ttl_seconds": ttl}
    ) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("old", [(payload(), [bob])])
            accepted = await a.expect("accepted")
        service = w.relay.app.state.delivery
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
        async with w.relay.app.state.engine.begin() as conn:
            await conn.execute(QueueEntry.__table__.update().values(expires_at=0))
            await conn.execute(DeliverySend.__table__.update().values(expires_at=0))
        await w.wait_count(QueueEntry, 0)
        await w.wait_count(DeliverySend, 0)
        assert await w.count(DeliveryPayload) == 0
