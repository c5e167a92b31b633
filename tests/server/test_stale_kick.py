"""A stale kick: two real relay nodes on PostgreSQL + Redis, node A's Redis traffic through a
proxy that holds A's first kick. A device connects on A (its kick is held), then on B (B's
kick closes A's connection, 4409); A's old kick is let through only then. It must not close
the device's newer connection on B (before attach numbers, every kick meant "a newer
connection elsewhere", and this one closed B's — a web client then stops, "replaced")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.cluster import node_ws, relay_nodes
from tests.server.relay_harness import free_port
from tests.server.ws_kit import setup_accounts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

_REPLACED = (4409, "replaced by a newer connection of this device")


class _KickHoldingProxy:
    """A TCP proxy to Redis that holds the first command carrying a kick (and what follows it
    on that connection) until :meth:`release`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self.held = asyncio.Event()
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def release(self) -> None:
        """Let the held kick (and everything behind it) go on to Redis."""
        self._released.set()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, hold: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if hold and not self.held.is_set() and b'"k":"kick"' in data:
                    self.held.set()
                    await self._released.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, hold=True)),
            asyncio.create_task(self._pump(up_reader, writer, hold=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve on ``self.port`` while the context is open."""
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        try:
            yield
        finally:
            self.release()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_stale_kick_does_not_close_the_newer_connection(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    url = urlsplit(redis_url)
    proxy = _KickHoldingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    proxied = f"redis://127.0.0.1:{proxy.port}{url.path or '/0'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        proxy.running(),
        relay_nodes(tmp_path / "a", postgres_url, proxied, redis_prefix, n=1) as (node_a,),
        relay_nodes(tmp_path / "b", postgres_url, redis_url, redis_prefix, n=1) as (node_b,),
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node_a}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1], "carol": [1]})
        alice, bob, carol = peers["alice", 1], peers["bob", 1], peers["carol", 1]
        old = await node_ws(node_a, bob)
        await asyncio.wait_for(proxy.held.wait(), 20)  # A's kick for it is on its way
        new = await node_ws(node_b, bob)
        assert await old.closed() == _REPLACED  # B's kick reached A
        # Now the old kick arrives at B. Then, behind it on A's publisher and B's
        # subscription: the kick of carol's connection on A, which closes hers on B.
        carol_b = await node_ws(node_b, carol)
        proxy.release()
        carol_a = await node_ws(node_a, carol)
        assert await carol_b.closed() == _REPLACED  # so B has handled the stale kick
        # bob's newer connection is still open and gets messages.
        sender = await node_ws(node_a, alice)
        try:
            await sender.send_message("m1", [(b"still here", [bob])])
            await sender.expect("accepted")
            got = await new.expect("deliver")
            assert base64.b64decode(got["data"]) == b"still here"
        finally:
            for ws in (sender, carol_a, new):
                await ws.ws.close()
