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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from clients.daemon.server import Daemon, DaemonRunning, is_live, socket_path
from clients.sdk import VoxClient
from clients.sdk.errors import ClientError

__all__ = ["Daemon", "DaemonRunning", "is_live", "serve", "serving", "socket_path"]

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
        announce(f"vox daemon: {client.username} device {client.device_id}, listening on {path}")
        try:
            await stop.wait()
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
