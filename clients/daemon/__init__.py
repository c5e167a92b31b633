"""``vox daemon``: scripting alongside the UI (signal-cli's daemon mode).

One process holds the profile and serves JSON-RPC 2.0 on ``HOME/vox.sock`` (mode 0600):
:mod:`clients.daemon.server` (the server), :mod:`clients.daemon.remote` (a client, used by
``vox`` commands when a daemon runs), :mod:`clients.daemon.jsonrpc` (framing, sans-I/O),
:mod:`clients.daemon.codec` (SDK values as JSON). ``vox chat`` serves the same socket while
it is open, so scripts and ``vox`` commands work next to the TUI. Reference: ``docs/daemon.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from clients.daemon import jsonrpc as rpc
from clients.daemon.server import Daemon, DaemonRunning, is_live, socket_path
from clients.sdk import VoxClient, heap
from clients.sdk.errors import ClientError

__all__ = ["Daemon", "DaemonRunning", "is_live", "serve", "serve_stdio", "serving", "socket_path"]

log = logging.getLogger("vox.daemon")


@contextlib.asynccontextmanager
async def serving(client: VoxClient, home: Path) -> AsyncIterator[Daemon]:
    """Serve ``client`` on ``home``'s socket for the duration of the block."""
    daemon = Daemon(client, socket_path(home))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.close()


async def _stay_connected(client: VoxClient) -> None:
    """Connect (receiving); while the relay is unreachable, retry with a capped backoff
    (once connected, the client reconnects by itself)."""
    delay = 0.5
    while True:
        try:
            await client.connect(receive=True)
            return
        except (ClientError, TimeoutError) as exc:
            log.info("relay not reachable yet: %s", exc)
            await client.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def serve(
    home: Path,
    *,
    passphrase: str | None,
    lock_timeout: float,
    announce: Callable[[str], None] = print,
) -> None:
    """Run ``vox daemon`` until SIGINT/SIGTERM: refuse when another daemon (or ``vox chat``)
    serves ``home``; otherwise open the profile, listen, connect to the relay."""
    path = socket_path(home)
    if await is_live(path):
        raise DaemonRunning(path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await VoxClient.open(home, passphrase=passphrase, lock_timeout=lock_timeout)
    async with client, serving(client, home):
        connecting = asyncio.create_task(_stay_connected(client))
        heap.settle()  # started: what is left is long-lived (clients.sdk.heap)
        announce(f"vox daemon: {client.username} device {client.device_id}, listening on {path}")
        try:
            await stop.wait()
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting


async def _stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=rpc.MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, eof: bool) -> None:
    while line := await source.readline():
        sink.write(line)
        await sink.drain()
    if eof and sink.can_write_eof():
        sink.write_eof()


async def serve_stdio(home: Path, *, passphrase: str | None, lock_timeout: float) -> None:
    """``vox jsonrpc``: the daemon's JSON-RPC on standard input and output, one request per
    line, until standard input ends (then running calls are answered). When a daemon holds
    the profile, the lines are passed to it."""
    reader, writer = await _stdio()
    path = socket_path(home)
    if await is_live(path):
        sock_reader, sock_writer = await asyncio.open_unix_connection(str(path), limit=rpc.MAX_LINE)
        answers = asyncio.create_task(_pump(sock_reader, writer, eof=False))
        await _pump(reader, sock_writer, eof=True)
        await answers
        return
    client = await VoxClient.open(home, passphrase=passphrase, lock_timeout=lock_timeout)
    async with client:
        daemon = Daemon(client, path)
        unsubscribe = client.on_event(daemon.on_event)
        connecting = asyncio.create_task(_stay_connected(client))
        heap.settle()
        try:
            await daemon.serve_stream(reader, writer)
        finally:
            unsubscribe()
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
