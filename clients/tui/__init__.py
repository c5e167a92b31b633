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

The window (screenshot: ``docs/tui.svg``): the relay's brand name in the header and its colours
as the Textual theme (``$primary``, ``$accent``, ``$background`` from ``/v1/config``); on the
left the conversations (``@ user``, ``# group``) with unread counts and ``⚠`` for a changed key;
on the right the conversation's title (with ``⏱ 1 hour`` while a disappearing timer is set,
in the words of :func:`clients.units.format_duration`, as the CLI and the timer rows) and its
history: ``HH:MM #3f9a0c sender: text`` — ``#3f9a0c`` is the message's short id
(:mod:`clients.tui.ids`), files read ``📎 name (size)``, a reply starts with the quoted message
on its own line (``↪ alice #b2c3d4: excerpt``), then ``(edited)``, the reactions with their
counts (``👍2 🎉``), ``⏱`` for a disappearing message and, on ours, ``…`` pending, ``✓`` accepted
by the relay, ``✓✓`` delivered, ``✓✓ read``, ``✗ not sent``, and ``… edit queued`` / ``✗ edit not
sent`` (a reaction, a delete) while our operation on it waits in the outbox / was refused for
good (its reason is shown when that happens); a message deleted for everyone is a
tombstone (``🗑 this message was deleted``), a timer change is a row of its own, once (``12:00
#3f9a0c bob set disappearing messages to 1 hour``). The sender's device number (``bob·2``,
``you·467399649``) is shown only when it helps: a message from our own other device, or a user
writing from several devices in this conversation. Below: a red banner while a peer's key change
is not accepted, a status line (``bob is typing…``, upload progress, ``offline — … retrying (N
s)`` as soon as the connection drops, then ``back online``) and the input box. The conversation
pane is anchored to its end: opening a chat, a resize or a new message shows the newest row,
unless the user scrolled up.

Rows are grouped under day separators (``── Today ──``, ``── Yesterday ──``, dates); group
changes read ``bob removed you``; file sizes are binary units of the file's own size; below 60
columns the conversation list hides (Ctrl+L shows it). Messages in other conversations ring
the bell and raise a desktop notification (:mod:`clients.tui.notify`; ``vox chat --no-notify``
or ``VOX_CHAT_NOTIFY=0`` turns them off).

Keys: Enter sends, PgUp/PgDn and the mouse wheel scroll the conversation (from the input box
too), Ctrl+End back to the newest, Ctrl+N next conversation, Ctrl+L focus the list (Enter
opens), Ctrl+Q quits; a click on a reply shows the message it quotes. ``/help`` opens the table
of keys and commands (:mod:`clients.tui.help`); a wrong command shows that command's usage line
only. Commands typed in the input box: ``/chat USER|GROUP`` (a name the relay does not know is
refused), ``/send-file PATH`` (the rest of the line, or a quoted path), ``/save [DIR]`` (last
file received in this conversation: downloaded, verified, decrypted; default
``HOME/downloads``), ``/verify`` (safety number), ``/accept`` (accept a changed key),
``/unverify`` (take a verification back), ``/group NAME USER...``, ``/add USER...`` and
``/remove USER...`` (in a group), ``/leave``;
on messages (``ID``: the short id shown, or any unique start of it, 4+ digits): ``/reply [ID]
TEXT`` (default: the newest message of the others), ``/edit [ID] TEXT`` (default: our newest),
``/delete ID [--for-me]`` (our message still queued is withdrawn, and the TUI says it
reached no one), ``/react [ID] EMOJI``, ``/react ID --remove`` or ``/unreact [ID]``,
``/jump ID`` (loads older history as needed); ``/disappear DURATION|off`` (``30s`` .. ``4w``),
``/search TEXT`` (this device's history, every conversation: a list, Enter opens the chat at
that message), ``/help``, ``/quit``.

Attached to a running ``vox daemon`` (:class:`~clients.tui.daemon_backend.DaemonBackend`) the
window is the same: the connection state comes from the daemon's ``status``, ``/save`` writes
under the profile's ``downloads``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.sdk import VoxClient, heap
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
    """Open the profile, run the TUI, close the profile (even on errors). While it runs, the
    TUI serves the profile's daemon socket, so ``vox`` commands work next to it."""
    from clients.daemon import is_live, serving, socket_path
    from clients.tui.daemon_backend import DaemonBackend

    path = socket_path(Path(home))
    if await is_live(path):  # a daemon holds the profile: attach to it
        backend = await DaemonBackend.connect_to(path)
        try:
            await run_async(backend, open_conversation=target)
        finally:
            await backend.close()
        return
    client = await VoxClient.open(home, passphrase=passphrase)
    async with client, serving(client, Path(home)):
        heap.settle()  # started: what is left is long-lived (clients.sdk.heap)
        await run_async(client, open_conversation=target)


def run(*, home: Path | str, target: str | None = None, passphrase: str | None = None) -> None:
    """Blocking entry point used by ``vox chat``."""
    asyncio.run(open_and_run(home, target=target, passphrase=passphrase))
