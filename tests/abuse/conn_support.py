"""Helpers for the connection-abuse tests (no tests here): clients from chosen loopback
addresses, raw sockets, and waiting for a peer to hang up.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a test can play several client
addresses: ``127.0.0.2`` is "the attacker", ``127.0.0.1`` everyone else.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.server.relay_harness import Relay
from tests.server.ws_kit import WsClient, open_ws

__all__ = ["http_from", "hung_up", "raw_connect", "ws_from"]


@asynccontextmanager
async def http_from(relay: Relay, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address``."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=relay.base_url, timeout=30, transport=transport) as c:
        yield c


def ws_from(relay: Relay, peer: Any, address: str) -> Any:
    """:func:`open_ws` with the client socket bound to ``address``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", relay.port))
    sock.setblocking(False)
    return open_ws(relay, peer, sock=sock)


async def raw_connect(
    relay: Relay | int, address: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the relay (or a loopback port) from ``address``."""
    port = relay if isinstance(relay, int) else relay.port
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def hung_up(reader: asyncio.StreamReader, wait: float) -> bool:
    """True if the peer closed (EOF or reset) within ``wait`` seconds (data is drained)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while (left := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


__all__ += ["WsClient"]
