"""Content-free Web Push through a real relay to a stand-in push service on loopback.

The relay runs under uvicorn; devices use real WebSockets; the push service is
``tests/server/push_receiver.py`` (it checks the VAPID JWT and decrypts RFC 8291 itself).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from server.logs import configure_logging
from server.push import PushDispatcher
from server.push.vapid import PAYLOAD
from server.state import relay_state
from tests.server.push_receiver import PushReceiver, b64url, push_receiver
from tests.server.relay_harness import Relay, auth_header, make_settings, running_relay
from tests.server.ws_kit import Peer, delivery_app, open_ws, payload, setup_accounts


@dataclass
class PushWorld:
    relays: list[Relay]
    peers: dict[tuple[str, int], Peer]
    rx: PushReceiver

    @property
    def relay(self) -> Relay:
        return self.relays[0]

    def dispatcher(self, node: int = 0) -> PushDispatcher:
        push = self.relays[node].state.push
        assert push is not None, "push is configured on every node"
        return push

    async def drained(self) -> None:
        for node in range(len(self.relays)):
            await self.dispatcher(node).drained()

    async def subscribe(self, peer: Peer, name: str) -> str:
        async with self.relay.client() as http:
            resp = await http.post(
                "/v1/push/subscriptions",
                json=self.rx.subscription(name),
                headers=auth_header(peer.token),
            )
        assert resp.status_code == 201, resp.text
        sub_id: str = resp.json()["id"]
        return sub_id

    async def subscriptions(self, peer: Peer) -> list[dict[str, Any]]:
        async with self.relay.client() as http:
            resp = await http.get("/v1/push/subscriptions", headers=auth_header(peer.token))
        assert resp.status_code == 200, resp.text
        subs: list[dict[str, Any]] = resp.json()["subscriptions"]
        return subs


def push_settings(**push: Any) -> dict[str, Any]:
    base = {
        "allow_loopback_endpoints": True,
        "coalesce_seconds": 3600,
        "ttl_seconds": 600,
        "urgency": "high",
    }
    return base | push


@asynccontextmanager
async def push_world(
    tmp_path: Path,
    spec: dict[str, Sequence[int]],
    *,
    nodes: int = 1,
    database_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str = "vox:",
    **push: Any,
) -> AsyncIterator[PushWorld]:
    """Relay node(s) with push on (loopback endpoints allowed), accounts, a push receiver."""
    async with AsyncExitStack() as stack:
        rx = await stack.enter_async_context(push_receiver())
        relays = []
        for node in range(nodes):
            settings = make_settings(
                tmp_path / f"node{node}",
                database_url=database_url,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
                push=push_settings(vapid_key_file=tmp_path / "vapid.pem", **push),
            )
            app = delivery_app(settings)
            relay_state(app).push_overrides = {"retry_base_seconds": 0.05}
            relays.append(await stack.enter_async_context(running_relay(settings, app=app)))
        async with relays[0].client() as http:
            peers = await setup_accounts(http, spec)
            vapid = await http.get("/v1/push/vapid")
        assert vapid.status_code == 200, vapid.text
        rx.vapid_key = vapid.json()["public_key"]
        yield PushWorld(relays, peers, rx)
        assert rx.errors == []


async def _gone(relay: Relay) -> None:
    """Wait until the relay has noticed that its WebSocket clients left."""
    deadline = asyncio.get_running_loop().time() + 30
    while relay.state.hub.connection_count:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def _send(relay: Relay, sender: Peer, to: list[Peer], count: int = 1) -> None:
    async with open_ws(relay, sender) as ws:
        for i in range(count):
            await ws.send_message(f"m{i}-{os.urandom(4).hex()}", [(payload(), to)])
            await ws.expect("accepted")


async def test_an_offline_device_gets_one_content_free_push_for_a_burst(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        await w.subscribe(w.peers["bob", 1], "bob")
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]], count=8)
        await w.drained()
        pushes = w.rx.pushes("bob")
        assert len(pushes) == 1
        push = pushes[0]
        assert push.body == PAYLOAD == b'{"v":1,"type":"new_messages"}'
        assert b"alice" not in push.body
        assert push.headers["ttl"] == "600"
        assert push.headers["urgency"] == "high"
        assert push.headers["topic"] == "new-messages"
        assert push.claims["aud"] == w.rx.origin
        assert push.claims["sub"] == "mailto:vox-relay@localhost"


async def test_a_connected_device_gets_no_push_until_it_disconnects(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        async with open_ws(w.relay, bob) as bob_ws:
            await _send(w.relay, w.peers["alice", 1], [bob])
            deliver = await bob_ws.expect("deliver")
            await bob_ws.send({"type": "ack", "seqs": [deliver["seq"]]})
            await w.drained()
            assert w.rx.pushes("bob") == []
        await _gone(w.relay)
        await _send(w.relay, w.peers["alice", 1], [bob])
        await w.rx.wait_for("bob", 1)
        await w.drained()
        assert len(w.rx.pushes("bob")) == 1


async def test_copies_of_a_users_own_messages_do_not_notify_their_other_devices(
    tmp_path: Path,
) -> None:
    async with push_world(tmp_path, {"alice": [1, 2], "bob": [1]}) as w:
        await w.subscribe(w.peers["alice", 2], "alice2")
        await w.subscribe(w.peers["bob", 1], "bob")
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1], w.peers["alice", 2]])
        await w.drained()
        assert len(w.rx.pushes("bob")) == 1
        assert w.rx.pushes("alice2") == []


async def test_a_gone_subscription_is_removed(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob-old")
        await w.subscribe(bob, "bob-new")
        w.rx.respond("bob-old", 410)
        await _send(w.relay, w.peers["alice", 1], [bob])
        await w.drained()
        assert [p.status for p in w.rx.pushes("bob-old")] == [410]
        assert [p.status for p in w.rx.pushes("bob-new")] == [201]
        assert [s["endpoint"] for s in await w.subscriptions(bob)] == [w.rx.endpoint("bob-new")]


async def test_failed_pushes_are_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1], "carol": [1]}, max_attempts=3) as w:
        await w.subscribe(w.peers["bob", 1], "bob")
        await w.subscribe(w.peers["carol", 1], "carol")
        w.rx.respond("bob", 503, 500)  # then 201
        w.rx.respond("carol", 500, 503, 502, 500)  # more failures than attempts
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]])
        await _send(w.relay, w.peers["alice", 1], [w.peers["carol", 1]])
        await w.drained()
        assert [p.status for p in w.rx.pushes("bob")] == [503, 500, 201]
        assert [p.status for p in w.rx.pushes("carol")] == [500, 503, 502]
        # A failing (not gone) push service keeps the subscription.
        assert len(await w.subscriptions(w.peers["carol", 1])) == 1
        async with w.relay.client() as http:
            text = (await http.get("/metrics")).text
        assert 'vox_push_requests_total{outcome="sent"} 1.0' in text
        assert 'vox_push_requests_total{outcome="failed"} 1.0' in text


async def test_the_vapid_key_is_created_once_with_mode_0600_and_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    key_file = settings.data_dir / "vapid_private_key.pem"
    keys = []
    for _ in range(2):
        async with (
            running_relay(settings, app=delivery_app(settings)) as relay,
            relay.client() as http,
        ):
            resp = await http.get("/v1/push/vapid")
        assert resp.status_code == 200
        assert resp.json()["content_encoding"] == "aes128gcm"
        keys.append(resp.json()["public_key"])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keys[0] == keys[1]
    assert len(keys[0]) == 87  # 65 bytes, base64url without padding


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_nodes_push_only_to_devices_connected_to_neither(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with push_world(
        tmp_path,
        {"alice": [1], "bob": [1]},
        nodes=2,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    ) as w:
        node_a, node_b = w.relays
        alice, bob = w.peers["alice", 1], w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        async with open_ws(node_b, bob) as bob_ws:
            await w.drained()  # bob's presence is in Redis
            await _send(node_a, alice, [bob])
            deliver = await bob_ws.expect("deliver")
            await bob_ws.send({"type": "ack", "seqs": [deliver["seq"]]})
            await w.drained()
            assert w.rx.pushes("bob") == []
        await _gone(node_b)
        await w.drained()  # bob's departure is in Redis
        await _send(node_a, alice, [bob])
        await w.rx.wait_for("bob", 1)
        # The coalescing window is shared: a message through the other node adds no push.
        await _send(node_b, alice, [bob])
        await w.drained()
        assert len(w.rx.pushes("bob")) == 1


async def test_a_device_whose_connection_ends_with_unacked_messages_gets_a_push(
    tmp_path: Path,
) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        async with open_ws(w.relay, bob) as bob_ws:
            await _send(w.relay, w.peers["alice", 1], [bob])
            await bob_ws.expect("deliver")  # ... never acked: the socket dies
            await w.drained()
            assert w.rx.pushes("bob") == []
        await w.rx.wait_for("bob", 1)
        await w.drained()
        assert len(w.rx.pushes("bob")) == 1


async def test_an_endpoint_on_a_private_address_is_never_contacted(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        # A row that bypassed registration's checks (or a name that now resolves inside).
        async with w.relay.state.sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO push_subscriptions (id, device_pk, endpoint, p256dh, auth,"
                    " created_at) SELECT 'x' || id, device_pk, 'https://10.255.255.1:9/x',"
                    " p256dh, auth, 0 FROM push_subscriptions"
                )
            )
            await session.commit()
        w.dispatcher().config = replace(w.dispatcher().config, allow_loopback=False)
        await _send(w.relay, w.peers["alice", 1], [bob])
        await w.drained()
        async with w.relay.client() as http:
            metrics = (await http.get("/metrics")).text
        # Loopback is now refused too: neither endpoint was contacted.
        assert 'vox_push_requests_total{outcome="refused"} 2.0' in metrics
        assert w.rx.pushes("bob") == []


def _resolver(answers: dict[str, list[str]], calls: list[str]) -> Any:
    """A DNS stand-in: ``answers`` maps names to addresses; other names fail like NXDOMAIN."""

    async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        calls.append(host)
        if host not in answers:
            raise OSError(f"no such name: {host}")
        return [(2, 1, 6, "", (address, port)) for address in answers[host]]

    return resolve


async def _point_subscriptions_at(w: PushWorld, endpoint: str) -> None:
    async with w.relay.state.sessions() as session:
        await session.execute(text("UPDATE push_subscriptions SET endpoint = :e"), {"e": endpoint})
        await session.commit()


async def test_the_relay_connects_to_the_address_it_checked_not_a_second_lookup(
    tmp_path: Path,
) -> None:
    # A name only the relay's (test) resolver knows: had the HTTP client looked the name up
    # again (the DNS-rebinding window), the system resolver would fail and nothing arrive.
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        name = "push.rebind.invalid"
        await _point_subscriptions_at(w, f"http://{name}:{w.rx.port}/push/bob")
        calls: list[str] = []
        w.dispatcher().resolve = _resolver({name: ["127.0.0.1"]}, calls)
        await _send(w.relay, w.peers["alice", 1], [bob])
        (push,) = await w.rx.wait_for("bob")
        await w.drained()
    assert calls == [name]  # resolved once, for the check; the connection used that address
    assert push.headers["host"] == f"{name}:{w.rx.port}"
    assert push.claims["aud"] == f"http://{name}:{w.rx.port}"  # VAPID names the real origin
    assert push.body == PAYLOAD


@pytest.mark.parametrize(
    "addresses",
    [["10.20.30.40"], ["93.184.216.34", "192.168.1.1"], ["127.0.0.1"], ["::1"], ["fd00::1"]],
)
async def test_a_name_resolving_to_any_internal_address_is_refused(
    tmp_path: Path, addresses: list[str]
) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        bob = w.peers["bob", 1]
        await w.subscribe(bob, "bob")
        name = "push.internal.invalid"
        await _point_subscriptions_at(w, f"https://{name}/push/bob")
        calls: list[str] = []
        w.dispatcher().resolve = _resolver({name: addresses}, calls)
        # Loopback is allowed only for tests' local push service; here it is off.
        w.dispatcher().config = replace(w.dispatcher().config, allow_loopback=False)
        await _send(w.relay, w.peers["alice", 1], [bob])
        await w.drained()
        async with w.relay.client() as http:
            metrics = (await http.get("/metrics")).text
    assert calls == [name]
    assert 'vox_push_requests_total{outcome="refused"} 1.0' in metrics
    assert w.rx.pushes("bob") == []


async def test_the_vapid_key_is_in_the_config_and_null_when_push_is_off(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1]}) as w, w.relay.client() as http:
        config = (await http.get("/v1/config")).json()
        vapid = (await http.get("/v1/push/vapid")).json()
    assert config["push"] == vapid
    assert config["push"]["content_encoding"] == "aes128gcm"
    settings = make_settings(tmp_path / "off", push={"enabled": False})
    async with running_relay(settings) as relay, relay.client() as http:
        assert (await http.get("/v1/config")).json()["push"] is None


async def test_one_send_to_many_offline_devices_pushes_each_of_them_once(tmp_path: Path) -> None:
    names = [f"user{i}" for i in range(8)]
    async with push_world(tmp_path, {"alice": [1], **{n: [1] for n in names}}) as w:
        for name in names:
            await w.subscribe(w.peers[name, 1], name)
        recipients = [w.peers[name, 1] for name in names]
        await _send(w.relay, w.peers["alice", 1], recipients, count=3)
        await w.drained()
        assert {name: len(w.rx.pushes(name)) for name in names} == dict.fromkeys(names, 1)


async def test_after_the_coalescing_window_a_new_message_gives_a_new_push(tmp_path: Path) -> None:
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}, coalesce_seconds=1) as w:
        await w.subscribe(w.peers["bob", 1], "bob")
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]])
        await w.rx.wait_for("bob", 1)
        await asyncio.sleep(1.5)  # the window (1 s) is over
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]])
        await w.rx.wait_for("bob", 2)
        await w.drained()
        assert len(w.rx.pushes("bob")) == 2


async def test_push_logs_name_the_push_service_but_never_the_endpoint_or_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vox")
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        await w.subscribe(w.peers["bob", 1], "bob-secret-path")
        w.rx.respond("bob-secret-path", 503, 410)
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]])
        await w.drained()
        agent = w.rx.agents["bob-secret-path"]
    events = {
        getattr(r, "fields", {}).get("event"): getattr(r, "fields", {}) for r in caplog.records
    }
    assert events["push_subscription_gone"]["origin"] == w.rx.origin
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "bob-secret-path" not in logged
    for secret in (agent.auth, agent.public_key):
        assert b64url(secret) not in logged and secret.hex() not in logged


async def test_the_relays_logging_never_writes_a_push_endpoint_even_at_debug(
    tmp_path: Path,
) -> None:
    # configure_logging is what `vox-relay serve` runs; httpx would log each request's URL.
    # (tests/conftest.py puts the logging configuration back after the test.)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    async with push_world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        await w.subscribe(w.peers["bob", 1], "bob-secret-path")
        await _send(w.relay, w.peers["alice", 1], [w.peers["bob", 1]])
        await w.drained()
        assert w.rx.pushes("bob-secret-path")
    logged = stream.getvalue()
    assert "push_sent" in logged
    assert "bob-secret-path" not in logged
