"""The per-device queue-depth limit holds across relay nodes sharing one PostgreSQL database.

Two relay apps (each with its own engine and its pipelined group-commit writer) run on loopback
against the same database; senders connected to both send to one offline recipient at the
same time. Every writer checks the depth and inserts in its own transaction, so without a
lock per recipient queue the concurrent batches each see room and together overfill it.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db.models_delivery import QueueEntry
from tests.server.relay_harness import Relay, make_settings, running_relay
from tests.server.ws_kit import Peer, WsClient, delivery_app, open_ws, payload, setup_accounts

pytestmark = pytest.mark.postgres

DEPTH = 10
SENDERS = 8
PER_SENDER = 6


async def _queued(relay: Relay, peer_pk: int) -> int:
    async with relay.state.sessions() as session:
        query = select(func.count()).select_from(QueueEntry).where(QueueEntry.device_pk == peer_pk)
        return int((await session.execute(query)).scalar_one())


async def _device_pk(relay: Relay, peer: Peer) -> int:
    from server.db.models import Account, Device

    async with relay.state.sessions() as session:
        query = (
            select(Device.pk)
            .join(Account, Account.id == Device.account_id)
            .where(Account.username == peer.user, Device.device_id == peer.device)
        )
        return int((await session.execute(query)).scalar_one())


async def test_queue_depth_limit_holds_for_concurrent_sends_through_two_nodes(
    tmp_path: Path, postgres_url: str
) -> None:
    # Every sender may fill the whole queue here (the per-sender share: tests/abuse).
    limits = {
        "max_queue_depth": DEPTH,
        "queue_share_per_sender": 1.0,
        "messages_per_second_per_device": 10_000.0,
    }
    async with AsyncExitStack() as stack:
        nodes: list[Relay] = []
        for i in range(2):
            settings = make_settings(
                tmp_path / f"node{i}", database_url=postgres_url, limits=limits
            )
            relay = await stack.enter_async_context(
                running_relay(settings, app=delivery_app(settings), run_migrations=i == 0)
            )
            nodes.append(relay)
        async with nodes[0].client() as http:
            spec = {"bob": [1], **{f"sender{i}": [1] for i in range(SENDERS)}}
            peers = await setup_accounts(http, spec)
        bob = peers["bob", 1]
        senders: list[WsClient] = []
        for i in range(SENDERS):
            node = nodes[i % 2]
            senders.append(await stack.enter_async_context(open_ws(node, peers[f"sender{i}", 1])))

        # Everyone sends at once; nobody acks (bob is offline).
        for i, ws in enumerate(senders):
            for n in range(PER_SENDER):
                await ws.send_message(f"s{i}-m{n}", [(payload(), [bob])])
        answers: Counter[str] = Counter()
        for ws in senders:
            for _ in range(PER_SENDER):
                frame = await ws.recv(wait=15)
                if frame["type"] == "error":
                    assert frame["code"] == "queue_full", frame
                    assert frame["devices"] == [{"user": "bob", "device": 1}], frame
                answers[frame["type"]] += 1

        queued = await _queued(nodes[0], await _device_pk(nodes[0], bob))
        assert queued <= DEPTH, f"bob's queue holds {queued} envelopes, the limit is {DEPTH}"
        # Exactly the limit was accepted; every other send was refused with queue_full.
        assert answers == {"accepted": DEPTH, "error": SENDERS * PER_SENDER - DEPTH}, answers
        assert queued == DEPTH
