"""The Vox chat TUI (Textual): ``vox chat [USERNAME|GROUP]``.

Contract with ``clients/cli.py``::

    def run(*, home: Path | str, target: str | None = None, passphrase: str | None = None) -> None

opens the profile in ``home`` (``VoxClient.open``), runs the TUI until the user quits (Ctrl+Q or
``/quit``) and closes the profile. ``target`` is a username, a group name or
``group:<group id hex>`` to open first. Errors opening the profile are the SDK's
:class:`~clients.sdk.errors.ClientError` (the CLI prints them as one line); relay problems
while running are shown in the window.

For an already open client (in the running event loop)::

    async def run_async(client: VoxClient | ChatBackend, *, open_conversation: str | None = None)

The TUI talks only to the client (the SDK's asyncio shell) through
:class:`~clients.tui.backend.ChatBackend`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.sdk import VoxClient
from clients.tui.app import ChatApp
from clients.tui.backend import ChatBackend, ConversationItem, SdkBackend

__all__ = [
    "ChatApp",
    "ChatBackend",
    "ConversationItem",
    "SdkBackend",
    "as_backend",
    "open_and_run",
    "run",
    "run_async",
]


def as_backend(client: VoxClient | ChatBackend) -> ChatBackend:
    """The :class:`ChatBackend` view of an SDK client (or ``client`` itself if it is one)."""
    return SdkBackend(client) if isinstance(client, VoxClient) else client


async def run_async(
    client: VoxClient | ChatBackend, *, open_conversation: str | None = None
) -> None:
    """Run the chat TUI for an open client until the user quits."""
    await ChatApp(as_backend(client), open_conversation=open_conversation).run_async()


async def open_and_run(
    home: Path | str, *, target: str | None = None, passphrase: str | None = None
) -> None:
    """Open the profile, run the TUI, close the profile (even on errors)."""
    client = await VoxClient.open(home, passphrase=passphrase)
    async with client:
        await run_async(client, open_conversation=target)


def run(*, home: Path | str, target: str | None = None, passphrase: str | None = None) -> None:
    """Blocking entry point used by ``vox chat``."""
    asyncio.run(open_and_run(home, target=target, passphrase=passphrase))
