"""The durable path through a real relay on loopback (SQLite): send → accepted → deliver →
ack → delete, redelivery, de-duplication, device-set checks, group fan-out, ephemeral sends."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from server.db.models_delivery import DeliveryPayload, DeliverySend, QueueEntry
from tests.server.ws_kit import open_ws, payload, world


async def test_message_is_accepted_delivered_acked_and_deleted(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        data = payload(100)
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            await a.send_message("m1", [(data, [bob])])
            accepted = await a.expect("accepted")
            assert accepted["id"] == "m1" and len(accepted["envelope"]) == 32
            deliver = await b.expect("deliver")
            assert deliver["envelope"] == accepted["envelope"]
            assert deliver["from"] == {"user": "alice", "device": 1}
            assert deliver["ts"] == accepted["ts"]
            assert base64.b64decode(deliver["data"]) == data
            assert await w.counts() == (1, 1, 1)
            await b.send({"type": "ack", "seqs": [deliver["seq"]]})
            await w.wait_count(QueueEntry, 0)
            assert await w.count(DeliveryPayload) == 0
            # The send record stays (until expiry) so that a retry is still recognised.
            assert await w.count(DeliverySend) == 1
            await b.send({"type": "ping", "id": "p"})
            assert (await b.expect("pong"))["id"] == "p"


async def test_messages_to_an_offline_device_arrive_in_order_when_it_connects(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        sent = [payload(20) for _ in range(30)]
        async with open_ws(w.relay, alice) as a:
            for i, data in enumerate(sent):
                await a.send_message(f"m{i}", [(data, [bob])])
            for i in range(30):
                assert (await a.expect("accepted"))["id"] == f"m{i}"
        async with open_ws(w.relay, bob) as b:
            got = [await b.expect("deliver") for _ in range(30)]
        assert [base64.b64decode(d["data"]) for d in got] == sent
        seqs = [d["seq"] for d in got]
        assert seqs == sorted(seqs)


async def test_unacked_envelopes_are_redelivered_on_reconnect(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(3):
                await a.send_message(f"m{i}", [(payload(), [bob])])
                await a.expect("accepted")
        async with open_ws(w.relay, bob) as b:
            first = [await b.expect("deliver") for _ in range(3)]
            await b.send({"type": "ack", "seqs": [first[0]["seq"]]})
            await w.wait_count(QueueEntry, 2)
        async with open_ws(w.relay, bob) as b:
            again = [await b.expect("deliver") for _ in range(2)]
            await b.nothing()
        assert [d["envelope"] for d in again] == [d["envelope"] for d in first[1:]]
        assert [d["data"] for d in again] == [d["data"] for d in first[1:]]


async def test_a_repeated_client_id_gets_the_same_answer_and_is_stored_once(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("same-id", [(b"one", [bob])])
            first = await a.expect("accepted")
            # Twice more: once in a later batch, once back to back in the same batch.
            await a.send_message("same-id", [(b"one", [bob])])
            await a.send_message("same-id", [(b"one", [bob])])
            assert await a.expect("accepted") == first
            assert await a.expect("accepted") == first
        async with open_ws(w.relay, alice) as a:  # and after a reconnect
            await a.send_message("same-id", [(b"one", [bob])])
            assert await a.expect("accepted") == first
        assert await w.counts() == (1, 1, 1)
        async with open_ws(w.relay, bob) as b:
            await b.expect("deliver")
            await b.nothing()


async def test_device_set_mismatch_names_missing_and_stale_devices_and_stores_nothing(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1, 2], "bob": [1, 2]}) as w:
        a1, a2, b1, b2 = w["alice", 1], w["alice", 2], w["bob", 1], w["bob", 2]
        stale_bob = type(b1)("bob", 9, "")
        async with open_ws(w.relay, a1) as a:
            # bob/2 missing, and alice/2 (the sender's other device) missing.
            await a.send_message("m1", [(payload(), [b1])])
            frame = await a.expect("mismatch")
            assert frame["id"] == "m1"
            assert frame["missing"] == [
                {"user": "alice", "device": 2},
                {"user": "bob", "device": 2},
            ]
            assert frame["stale"] == []
            await a.send_message("m2", [(payload(), [b1, b2, stale_bob, a2])])
            frame = await a.expect("mismatch")
            assert frame["missing"] == [] and frame["stale"] == [{"user": "bob", "device": 9}]
            assert await w.counts() == (0, 0, 0)
            # The complete set is accepted: one payload for bob's devices, one for alice/2.
            await a.send_message("m3", [(payload(), [b1, b2]), (payload(), [a2])])
            await a.expect("accepted")
        assert await w.counts() == (1, 2, 3)


async def test_one_group_payload_is_stored_once_and_fanned_out_to_every_device(
    tmp_path: Path,
) -> None:
    spec = {"alice": [1], "bob": [1, 2], "carol": [1], "dave": [1, 2, 3]}
    async with world(tmp_path, spec) as w:
        alice = w["alice", 1]
        members = [p for key, p in w.peers.items() if key[0] != "alice"]
        data = payload(500)
        async with open_ws(w.relay, alice) as a:
            await a.send_message("g1", [(data, members)])
            accepted = await a.expect("accepted")
        assert await w.counts() == (1, 1, len(members))
        for member in members:
            async with open_ws(w.relay, member) as m:
                d = await m.expect("deliver")
                assert d["envelope"] == accepted["envelope"]
                assert base64.b64decode(d["data"]) == data
                await m.send({"type": "ack", "seqs": [d["seq"]]})
                await m.send({"type": "ping"})
                await m.expect("pong")
        await w.wait_count(QueueEntry, 0)
        assert await w.count(DeliveryPayload) == 0


async def test_ephemeral_sends_reach_only_connected_devices_and_are_never_stored(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1, 2]}) as w:
        alice, b1, b2 = w["alice", 1], w["bob", 1], w["bob", 2]
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, b1) as b:
            await a.send_message("typing-1", [(b"typing", [b1, b2])], ephemeral=True)
            accepted = await a.expect("accepted")
            assert accepted["ephemeral"] is True and accepted["envelope"] is None
            frame = await b.expect("ephemeral")
            assert frame["from"] == {"user": "alice", "device": 1}
            assert base64.b64decode(frame["data"]) == b"typing"
            assert "seq" not in frame
        assert await w.counts() == (0, 0, 0)
        async with open_ws(w.relay, b2) as b:
            await b.nothing()


async def test_a_newer_connection_of_the_same_device_replaces_the_older_one(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, bob) as old, open_ws(w.relay, bob) as new:
            assert await old.closed() == (4409, "replaced by a newer connection of this device")
            async with open_ws(w.relay, alice) as a:
                await a.send_message("m1", [(b"x", [bob])])
                await a.expect("accepted")
            await new.expect("deliver")


@pytest.mark.postgres
async def test_the_durable_path_works_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with world(tmp_path, {"alice": [1, 2], "bob": [1, 2]}, database_url=postgres_url) as w:
        a1, a2, b1, b2 = w["alice", 1], w["alice", 2], w["bob", 1], w["bob", 2]
        async with open_ws(w.relay, a1) as a:
            await a.send_message("m0", [(payload(), [b1])])
            assert (await a.expect("mismatch"))["missing"] == [
                {"user": "alice", "device": 2},
                {"user": "bob", "device": 2},
            ]
            for i in range(5):
                await a.send_message(f"m{i}", [(payload(), [b1, b2, a2])])
            first = [await a.expect("accepted") for _ in range(5)]
            await a.send_message("m0", [(payload(), [b1, b2, a2])])
            assert await a.expect("accepted") == first[0]
        assert await w.counts() == (5, 5, 15)
        async with open_ws(w.relay, b1) as b:
            got = [await b.expect("deliver") for _ in range(5)]
            assert [d["envelope"] for d in got] == [f["envelope"] for f in first]
            await b.send({"type": "ack", "seqs": [d["seq"] for d in got[:3]]})
            await w.wait_count(QueueEntry, 12)
        async with open_ws(w.relay, b1) as b:
            again = [await b.expect("deliver") for _ in range(2)]
            assert [d["seq"] for d in again] == [d["seq"] for d in got[3:]]
            await b.send({"type": "ack", "seqs": [d["seq"] for d in again]})
            await w.wait_count(QueueEntry, 10)
        assert await w.count(DeliveryPayload) == 5  # still needed by bob/2 and alice/2
        for peer in (b2, a2):
            async with open_ws(w.relay, peer) as c:
                frames = [await c.expect("deliver") for _ in range(5)]
                await c.send({"type": "ack", "seqs": [f["seq"] for f in frames]})
                await c.send({"type": "ping"})
                await c.expect("pong")
        await w.wait_count(QueueEntry, 0)
        await w.wait_count(DeliveryPayload, 0)
        assert await w.count(DeliverySend) == 5


async def test_logs_never_contain_ciphertext_or_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Everything the relay logs at INFO, its own loggers at DEBUG. (At DEBUG, the websockets
    # library logs whole frames through "uvicorn.error": never run a relay at DEBUG there.)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="vox")
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        secret = payload(64)
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            await a.send_message("m1", [(secret, [bob])])
            await a.expect("accepted")
            d = await b.expect("deliver")
            await a.send({"type": "send", "id": "bad", "payloads": [{"data": "!!", "to": []}]})
            await a.expect("error")
            await b.send({"type": "ack", "seqs": [d["seq"], 999]})
            await b.expect("error")
        async with open_ws(w.relay, None) as anon:
            await anon.send({"type": "auth", "token": "x" * 43})
            await anon.closed()
    text = "\n".join(r.getMessage() + " " + str(r.__dict__) for r in caplog.records)
    assert text  # something was logged
    for needle in (base64.b64encode(secret).decode(), alice.token, bob.token, "x" * 43):
        assert needle not in text


async def test_deliver_frames_carry_canonical_base64_live_queued_and_ephemeral(
    tmp_path: Path,
) -> None:
    # The relay reuses the sender's base64 text in deliver frames when it is the canonical
    # encoding; "QR==" / "QUJ=" decode strictly too (non-zero unused bits) and must come out
    # as "QQ==" / "QUI=", the same whether delivered live, from the queue or ephemeral.
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        spelled = {"m1": ("QQ==", "QQ=="), "m2": ("QR==", "QQ=="), "m3": ("QUJ=", "QUI=")}
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            for client_id, (text, _) in spelled.items():
                await a.send(
                    {"type": "send", "id": client_id, "payloads": [{"data": text, "to": [bob.ref]}]}
                )
                await a.expect("accepted")
            live = [(await b.expect("deliver"))["data"] for _ in spelled]
            await a.send(
                {
                    "type": "send",
                    "id": "e1",
                    "ephemeral": True,
                    "payloads": [{"data": "QUJ=", "to": [bob.ref]}],
                }
            )
            assert (await b.expect("ephemeral"))["data"] == "QUI="
        async with open_ws(w.relay, bob) as b:  # unacked: redelivered from the database
            queued = [(await b.expect("deliver"))["data"] for _ in spelled]
        assert live == queued == [canonical for _, canonical in spelled.values()]
