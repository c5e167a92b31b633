"""Finding 1: connection hygiene — deadlines for the request head, the upgrade and the
``auth`` frame, idle keep-alive, per-address caps, and a reserve for operators' probes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.abuse.conn_support import http_from, hung_up, raw_connect, ws_from
from tests.server.relay_harness import free_port, relay_process
from tests.server.ws_kit import open_ws, world

UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {}, limits={"header_timeout_seconds": 1.0}) as w:
        conns = [await raw_connect(w.relay) for _ in range(5)]
        results = await asyncio.gather(*(hung_up(reader, 15) for reader, _ in conns))
        assert all(results)
        for _, writer in conns:
            writer.close()


async def test_an_upgrade_dribbled_byte_by_byte_is_closed(tmp_path: Path) -> None:
    async with world(tmp_path, {}, limits={"header_timeout_seconds": 1.0}) as w:
        reader, writer = await raw_connect(w.relay)
        closed = False
        for byte in UPGRADE[:40]:  # 40 × 0.25 s = 10 s, well past the 1 s deadline
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if await hung_up(reader, 0.25):
                closed = True
                break
        writer.close()
        assert closed


async def test_a_whole_upgrade_in_time_still_works(tmp_path: Path) -> None:
    async with (
        world(tmp_path, {"alice": [1]}, limits={"header_timeout_seconds": 1.0}) as w,
        open_ws(w.relay, w["alice", 1]) as ws,
    ):
        await asyncio.sleep(2.0)  # past the head deadline: an open socket is not affected
        await ws.send({"type": "ping", "id": "x"})
        assert (await ws.expect("pong"))["id"] == "x"


async def test_no_auth_frame_closes_after_the_configured_auth_deadline(tmp_path: Path) -> None:
    async with (
        world(tmp_path, {}, limits={"auth_timeout_seconds": 1.0}) as w,
        open_ws(w.relay, None) as ws,
    ):
        assert await ws.closed(wait=8) == (4401, "no auth frame in time")


async def test_an_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    async with world(tmp_path, {}, limits={"keepalive_timeout_seconds": 1.0}) as w:
        reader, writer = await raw_connect(w.relay)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        await writer.drain()
        assert await hung_up(reader, 10)
        writer.close()


async def test_one_address_cannot_hold_more_than_its_unauthenticated_connections(
    tmp_path: Path,
) -> None:
    limits = {"max_unauthenticated_connections_per_address": 5, "header_timeout_seconds": 30.0}
    async with world(tmp_path, {}, limits=limits) as w:
        conns = [await raw_connect(w.relay, "127.0.0.2") for _ in range(12)]
        states = await asyncio.gather(*(hung_up(reader, 2) for reader, _ in conns))
        assert sum(not closed for closed in states) == 5
        # Another address is served meanwhile, and the operator sees the refusals.
        async with http_from(w.relay, "127.0.0.3") as http:
            assert (await http.get("/healthz")).status_code == 200
            metrics = (await http.get("/metrics")).text
        assert 'vox_connections_refused_total{reason="address"} 7.0' in metrics
        for _, writer in conns:
            writer.close()


async def test_one_address_cannot_hold_more_than_its_authenticated_sockets(
    tmp_path: Path,
) -> None:
    limits = {"max_authenticated_connections_per_address": 2}
    spec = {"mallory": [1], "eve": [1], "oscar": [1], "alice": [1]}
    async with (
        world(tmp_path, spec, limits=limits) as w,
        ws_from(w.relay, w["mallory", 1], "127.0.0.2"),
        ws_from(w.relay, w["eve", 1], "127.0.0.2"),
        ws_from(w.relay, None, "127.0.0.2") as third,
    ):
        await third.send({"type": "auth", "token": w["oscar", 1].token})
        assert await third.closed() == (4429, "too many connections from this address")
        async with ws_from(w.relay, w["alice", 1], "127.0.0.3") as other:
            await other.send({"type": "ping"})
            await other.expect("pong")


async def test_health_probes_are_answered_from_the_reserve_when_the_relay_is_full(
    tmp_path: Path,
) -> None:
    limits = {"max_connections": 16, "connection_reserve": 4, "header_timeout_seconds": 60.0}
    async with world(tmp_path, {}, limits=limits) as w:
        # 16 idle connections from 16 addresses fill the relay.
        conns = [await raw_connect(w.relay, f"127.0.1.{i}") for i in range(1, 17)]
        await asyncio.sleep(0.2)
        async with http_from(w.relay, "127.0.0.3") as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await http.get(path)).status_code == 200
            resp = await http.get("/v1/config")
            assert resp.status_code == 503
            assert resp.json()["error"] == "overloaded"
        for _, writer in conns:
            writer.close()
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=w.relay.base_url, timeout=30) as http:
            assert (await http.get("/v1/config")).status_code == 200


async def test_the_operator_listener_answers_probes_outside_every_cap(tmp_path: Path) -> None:
    port, ops = free_port(), free_port()
    env = {
        "VOX_DATA_DIR": str(tmp_path / "vox-data"),
        "VOX_LOG_LEVEL": "warning",
        "VOX_OPS_PORT": str(ops),
        "VOX_LIMITS__MAX_UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS": "2",
        "VOX_LIMITS__HEADER_TIMEOUT_SECONDS": "60",
    }
    async with relay_process(["serve", "--port", str(port)], env=env, port=port):
        # This address holds its two connections to the public port: a third is refused...
        held = [await raw_connect(port, "127.0.0.2") for _ in range(2)]
        reader, writer = await raw_connect(port, "127.0.0.2")
        assert await hung_up(reader, 10)
        writer.close()
        # ... but the operator listener serves it, and only the operator paths.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=30) as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await http.get(f"http://127.0.0.1:{ops}{path}")).status_code == 200
            resp = await http.get(f"http://127.0.0.1:{ops}/v1/config")
            assert resp.status_code == 404
            assert resp.json()["error"] == "not_found"
        for _, w in held:
            w.close()
